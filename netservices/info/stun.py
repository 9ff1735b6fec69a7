# -*- test-case-name: tests.info.test_stun -*-
"""
A small codec for STUN Binding (RFC 8489), free of any reactor.

It serves a UDP "what is my address" service and our own client for it.
Because the server answers unauthenticated UDP, where the source address
can be spoofed, the response must never be much larger than the request,
or the server becomes a traffic amplifier.  Hence:

  - The smallest valid request is a bare 20-byte header.  The response
    carries nothing but XOR-MAPPED-ADDRESS: 32 bytes for IPv4 (an
    amplification factor of 1.6) and 44 bytes for IPv6 (2.2).  SOFTWARE,
    FINGERPRINT and the legacy MAPPED-ADDRESS are deliberately left out,
    since every one of them would raise that factor.
  - Requests with unknown comprehension-required attributes are dropped
    (L{MalformedStun}) instead of being answered with a 420 error, which
    would echo the unknown attribute types back and be larger still.
  - Classic RFC 3489 clients (Debian's C{stun-client}, for one) send no
    magic cookie; they get the MAPPED-ADDRESS they understand instead, in a
    response of the same size.
  - The parser is total: whatever bytes arrive, it returns a
    L{BindingRequest} or raises L{MalformedStun}, never anything else.
"""

import ipaddress
import struct
import zlib

import attrs

MAGIC_COOKIE = 0x2112A442
HEADER_SIZE = 20
RESPONSE_SIZE_IPV4 = 32
RESPONSE_SIZE_IPV6 = 44

_BINDING_REQUEST = 0x0001
_BINDING_SUCCESS = 0x0101
_MAPPED_ADDRESS = 0x0001
_XOR_MAPPED_ADDRESS = 0x0020
_FINGERPRINT = 0x8028
_FINGERPRINT_XOR = 0x5354554E
_FAMILY_IPV4 = 0x01
_FAMILY_IPV6 = 0x02

_HEADER = struct.Struct("!HHI12s")
_ATTRIBUTE_HEADER = struct.Struct("!HH")
_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)

# Comprehension-required attributes that RFC 8489 and RFC 5780 define for
# requests; any other type below 0x8000 would oblige us to send a 420.
_KNOWN_REQUEST_ATTRIBUTES = frozenset(
    # CHANGE-REQUEST, USERNAME, MESSAGE-INTEGRITY, REALM, NONCE,
    # MESSAGE-INTEGRITY-SHA256, PASSWORD-ALGORITHM, USERHASH, PRIORITY,
    # USE-CANDIDATE, PADDING, RESPONSE-PORT
    {0x0003, 0x0006, 0x0008, 0x0014, 0x0015, 0x001C, 0x001D, 0x001E}
    | {0x0024, 0x0025, 0x0026, 0x0027}
)


class MalformedStun(ValueError):
    """
    A datagram is not a STUN message we are willing to accept.
    """


@attrs.frozen
class BindingRequest:
    """
    A parsed STUN Binding Request.

    @ivar transactionID: The 12-byte transaction ID to echo in the response.
    @ivar cookie: The 4 bytes before it: the magic cookie, or for a classic
        RFC 3489 request the start of its 16-byte transaction ID.
    """

    transactionID: bytes
    cookie: bytes = _COOKIE_BYTES

    @property
    def classic(self) -> bool:
        """
        Whether this is an RFC 3489 request, without the magic cookie.
        """
        return self.cookie != _COOKIE_BYTES


def looksLikeStun(data: bytes) -> bool:
    """
    Decide cheaply whether a datagram claims to be STUN at all.

    @param data: A received datagram.
    @return: C{True} if C{data} is at least a header long, starts with two
        zero bits and carries the magic cookie, or is a classic RFC 3489
        Binding Request whose length field matches its size.
    """
    if len(data) < HEADER_SIZE or data[0] & 0xC0:
        return False
    if data[4:8] == _COOKIE_BYTES:
        return True
    kind, length = _ATTRIBUTE_HEADER.unpack_from(data)
    return kind == _BINDING_REQUEST and length == len(data) - HEADER_SIZE


def _parseMessage(
    data: bytes, messageType: int, classic: bool = False
) -> tuple[bytes, list]:
    """
    Validate the header and attribute framing of a STUN message.

    @param classic: whether an RFC 3489 message (without cookie) is allowed.
    @return: The transaction ID and a list of C{(type, value)} pairs.
    @raise MalformedStun: If anything is amiss.
    """
    if not looksLikeStun(data) or (data[4:8] != _COOKIE_BYTES and not classic):
        raise MalformedStun("not a STUN message")
    kind, length, _, transactionID = _HEADER.unpack_from(data)
    if kind != messageType:
        raise MalformedStun(f"unexpected message type 0x{kind:04x}")
    if length != len(data) - HEADER_SIZE or length % 4:
        raise MalformedStun("bad message length")
    attributes = []
    offset = HEADER_SIZE
    # Both offset and len(data) stay multiples of 4, so a whole attribute
    # header always fits once offset < len(data).
    while offset < len(data):
        attrType, attrLength = _ATTRIBUTE_HEADER.unpack_from(data, offset)
        end = offset + 4 + attrLength
        if end + (-attrLength % 4) > len(data):
            raise MalformedStun("truncated attribute")
        value = data[offset + 4 : end]
        if attrType == _FINGERPRINT:
            if attrLength != 4 or end != len(data):
                raise MalformedStun("FINGERPRINT is not last")
            expected = zlib.crc32(data[:offset]) ^ _FINGERPRINT_XOR
            if struct.unpack("!I", value)[0] != expected:
                raise MalformedStun("bad FINGERPRINT")
        attributes.append((attrType, value))
        offset = end + (-attrLength % 4)
    return transactionID, attributes


def parseBindingRequest(data: bytes) -> BindingRequest:
    """
    Parse and completely validate a STUN Binding Request.

    MESSAGE-INTEGRITY is accepted but not verified: we hold no credentials,
    and the answer only tells the sender what it could already see.

    @param data: A received datagram.
    @return: The parsed request.
    @raise MalformedStun: If C{data} is not a well-formed Binding Request
        we understand; no other exception is ever raised.
    """
    transactionID, attributes = _parseMessage(data, _BINDING_REQUEST, classic=True)
    for attrType, _ in attributes:
        if attrType < 0x8000 and attrType not in _KNOWN_REQUEST_ATTRIBUTES:
            raise MalformedStun(
                f"unknown comprehension-required attribute 0x{attrType:04x}"
            )
    return BindingRequest(transactionID=transactionID, cookie=data[4:8])


def _header(
    messageType: int, length: int, transactionID: bytes, cookie: bytes = _COOKIE_BYTES
) -> bytes:
    if len(transactionID) != 12 or len(cookie) != 4:
        raise ValueError("transaction ID must be 12 bytes")
    return struct.pack("!HH", messageType, length) + cookie + transactionID


def bindingRequest(transactionID: bytes) -> bytes:
    """
    Build a bare Binding Request.

    @param transactionID: 12 random bytes.
    @return: The 20-byte request.
    """
    return _header(_BINDING_REQUEST, 0, transactionID)


def bindingResponse(
    transactionID: bytes, host: str, port: int, cookie: bytes = _COOKIE_BYTES
) -> bytes:
    """
    Build a Binding Success Response carrying only XOR-MAPPED-ADDRESS, or
    only MAPPED-ADDRESS for a classic RFC 3489 request.

    @param transactionID: The transaction ID of the request.
    @param cookie: L{BindingRequest.cookie} of the request.
    @param host: The request's source address, IPv4 or IPv6; IPv4-mapped
        IPv6 addresses (as seen on dual-stack sockets) are sent as IPv4.
    @param port: The request's source port.
    @return: A response of L{RESPONSE_SIZE_IPV4} or L{RESPONSE_SIZE_IPV6}
        bytes.
    """
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"bad port {port!r}")
    address = ipaddress.ip_address(host)
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    family = _FAMILY_IPV4 if address.version == 4 else _FAMILY_IPV6
    if cookie != _COOKIE_BYTES:
        value = struct.pack("!BBH", 0, family, port) + address.packed
        attrType = _MAPPED_ADDRESS
    else:
        key = _COOKIE_BYTES + transactionID
        xAddress = bytes(a ^ k for a, k in zip(address.packed, key))
        value = struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16))
        value += xAddress
        attrType = _XOR_MAPPED_ADDRESS
    attribute = _ATTRIBUTE_HEADER.pack(attrType, len(value)) + value
    return _header(_BINDING_SUCCESS, len(attribute), transactionID, cookie) + attribute


def _decodeAddress(value: bytes, xorKey: bytes) -> tuple[str, int]:
    """
    Decode a (XOR-)MAPPED-ADDRESS value; an empty key means no XOR.
    """
    if len(value) < 4:
        raise MalformedStun("truncated address")
    _, family, port = struct.unpack_from("!BBH", value)
    size = {_FAMILY_IPV4: 4, _FAMILY_IPV6: 16}.get(family)
    if size is None or len(value) != 4 + size:
        raise MalformedStun("bad address family or length")
    packed = value[4:]
    if xorKey:
        port ^= MAGIC_COOKIE >> 16
        packed = bytes(a ^ k for a, k in zip(packed, xorKey))
    return str(ipaddress.ip_address(packed)), port


def parseBindingResponse(data: bytes, transactionID: bytes) -> tuple[str, int]:
    """
    Parse a Binding Success Response to a request we sent.

    Unknown attributes are ignored: we only need the mapped address, and
    real servers send assorted legacy ones.

    @param data: A received datagram.
    @param transactionID: The transaction ID of our request.
    @return: The mapped C{(host, port)}, from XOR-MAPPED-ADDRESS or else
        MAPPED-ADDRESS; IPv6 hosts are in compressed form.
    @raise MalformedStun: If C{data} is not a valid response to our request.
    """
    receivedID, attributes = _parseMessage(data, _BINDING_SUCCESS)
    if receivedID != transactionID:
        raise MalformedStun("transaction ID mismatch")
    found = dict(reversed(attributes))  # keep the first of any duplicates
    if _XOR_MAPPED_ADDRESS in found:
        key = _COOKIE_BYTES + transactionID
        return _decodeAddress(found[_XOR_MAPPED_ADDRESS], key)
    if _MAPPED_ADDRESS in found:
        return _decodeAddress(found[_MAPPED_ADDRESS], b"")
    raise MalformedStun("no mapped address")
