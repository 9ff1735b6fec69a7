"""
Tests for L{netservices.info.stun}.
"""

import hashlib
import hmac
import struct
import zlib
from functools import partial

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.trial.unittest import SynchronousTestCase

from netservices.info.stun import (
    HEADER_SIZE,
    MAGIC_COOKIE,
    RESPONSE_SIZE_IPV4,
    RESPONSE_SIZE_IPV6,
    BindingRequest,
    MalformedStun,
    bindingRequest,
    bindingResponse,
    looksLikeStun,
    parseBindingRequest,
    parseBindingResponse,
)

# RFC 5769 test vectors; all three share this transaction ID and password.
VECTOR_TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
VECTOR_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"

# Section 2.1: SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
# MESSAGE-INTEGRITY, FINGERPRINT.
SAMPLE_REQUEST = bytes.fromhex(
    "00010058" "2112a442" "b7e7a701" "bc34d686" "fa87dfae"
    "80220010" "5354554e" "20746573" "7420636c" "69656e74"
    "00240004" "6e0001ff"
    "80290008" "932ff9b1" "51263b36"
    "00060009" "6576746a" "3a683676" "59202020"
    "00080014" "9aeaa70c" "bfd8cb56" "781ef2b5" "b2d3f249" "c1b571a2"
    "80280004" "e57a3bcf"
)

# Section 2.2: SOFTWARE, XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT.
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c" "2112a442" "b7e7a701" "bc34d686" "fa87dfae"
    "8022000b" "74657374" "20766563" "746f7220"
    "00200008" "0001a147" "e112a643"
    "00080014" "2b91f599" "fd9e90c3" "8c7489f9" "2af9ba53" "f06be7d7"
    "80280004" "c07d4c96"
)

# Section 2.3: as 2.2, with an IPv6 XOR-MAPPED-ADDRESS.
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "01010048" "2112a442" "b7e7a701" "bc34d686" "fa87dfae"
    "8022000b" "74657374" "20766563" "746f7220"
    "00200014" "0002a147" "0113a9fa" "a5d3f179" "bc25f4b5" "bed2b9d9"
    "00080014" "a382954e" "4be67bf1" "1784c97c" "8292c275" "bfe3ed41"
    "80280004" "c8fb0b4c"
)

TID = b"0123456789ab"


def message(messageType, attributes, transactionID=TID, fingerprint=False):
    """
    Build a STUN message from C{(type, value)} pairs, padding each value.
    """
    body = b"".join(
        struct.pack("!HH", t, len(v)) + v + b"\x00" * (-len(v) % 4)
        for t, v in attributes
    )
    length = len(body) + (8 if fingerprint else 0)
    data = struct.pack("!HHI", messageType, length, MAGIC_COOKIE)
    data += transactionID + body
    if fingerprint:
        crc = zlib.crc32(data) ^ 0x5354554E
        data += struct.pack("!HHI", 0x8028, 4, crc)
    return data


def flipped(data, flips):
    """
    Return C{data} with each C{(index, mask)} in C{flips} XORed in.
    """
    result = bytearray(data)
    for index, mask in flips:
        result[index % len(result)] ^= mask
    return bytes(result)


class VectorTests(SynchronousTestCase):
    """
    The RFC 5769 test vectors.
    """

    def test_transcription(self):
        """
        The vectors are transcribed correctly: their MESSAGE-INTEGRITY,
        computed as RFC 8489 section 14.5 describes, matches.
        """
        vectors = [SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE]
        for data in vectors:
            offset = data.index(bytes.fromhex("00080014"))
            covered = bytearray(data[:offset])
            covered[2:4] = struct.pack("!H", offset + 24 - HEADER_SIZE)
            mac = hmac.new(VECTOR_PASSWORD, bytes(covered), hashlib.sha1)
            self.assertEqual(mac.digest(), data[offset + 4 : offset + 24])

    def test_sampleRequest(self):
        """
        The sample request, with its comprehension-optional ICE-CONTROLLED
        and a valid FINGERPRINT, parses as a Binding Request.
        """
        self.assertEqual(
            parseBindingRequest(SAMPLE_REQUEST), BindingRequest(VECTOR_TID)
        )

    def test_sampleRequestBadFingerprint(self):
        """
        Changing any bit of the sample request before its FINGERPRINT value
        makes the checksum fail.
        """
        for data in [flipped(SAMPLE_REQUEST, [(30, 1)]),
                     flipped(SAMPLE_REQUEST, [(-1, 0x80)])]:
            self.assertRaises(MalformedStun, parseBindingRequest, data)

    def test_sampleIPv4Response(self):
        """
        The sample IPv4 response maps to 192.0.2.1 port 32853.
        """
        self.assertEqual(
            parseBindingResponse(SAMPLE_IPV4_RESPONSE, VECTOR_TID),
            ("192.0.2.1", 32853),
        )

    def test_sampleIPv6Response(self):
        """
        The sample IPv6 response maps to 2001:db8:1234:5678:11:2233:4455:6677
        port 32853, in compressed form.
        """
        self.assertEqual(
            parseBindingResponse(SAMPLE_IPV6_RESPONSE, VECTOR_TID),
            ("2001:db8:1234:5678:11:2233:4455:6677", 32853),
        )

    def test_sampleResponseBadFingerprint(self):
        """
        A sample response with a damaged FINGERPRINT is rejected.
        """
        data = flipped(SAMPLE_IPV4_RESPONSE, [(-2, 4)])
        self.assertRaises(
            MalformedStun, parseBindingResponse, data, VECTOR_TID
        )


class LooksLikeStunTests(SynchronousTestCase):
    """
    Tests for L{looksLikeStun}.
    """

    def test_stun(self):
        """
        Requests, responses and the sample vectors all look like STUN.
        """
        for data in [bindingRequest(TID), bindingResponse(TID, "::1", 1),
                     SAMPLE_REQUEST, SAMPLE_IPV6_RESPONSE]:
            self.assertTrue(looksLikeStun(data))

    def test_notStun(self):
        """
        Short data, a wrong cookie on anything but a classic Binding Request
        whose length matches, or either top bit set is not STUN.
        """
        request = bindingRequest(TID)
        for data in [b"", request[:19], flipped(request, [(4, 1), (1, 0x10)]),
                     flipped(request, [(4, 1), (3, 4)]),
                     flipped(request, [(0, 0x80)]),
                     flipped(request, [(0, 0x40)]),
                     b"GET / HTTP/1.1\r\n\r\n!"]:
            self.assertFalse(looksLikeStun(data))


class RequestTests(SynchronousTestCase):
    """
    Tests for L{bindingRequest} and L{parseBindingRequest}.
    """

    def test_bare(self):
        """
        L{bindingRequest} makes a 20-byte request that parses back.
        """
        data = bindingRequest(TID)
        self.assertEqual(len(data), HEADER_SIZE)
        self.assertEqual(parseBindingRequest(data), BindingRequest(TID))

    def test_badTransactionID(self):
        """
        A transaction ID that is not 12 bytes is a programming error.
        """
        self.assertRaises(ValueError, bindingRequest, b"short")
        self.assertRaises(ValueError, bindingResponse, b"x" * 13, "::1", 1)

    def test_knownAttributes(self):
        """
        Known comprehension-required and any comprehension-optional
        attributes are accepted, with a valid FINGERPRINT.
        """
        data = message(
            0x0001,
            [(0x0003, b"\x00\x00\x00\x06"), (0x0006, b"user"),
             (0x0026, b"\x00" * 7), (0xC001, b"x")],
            fingerprint=True,
        )
        self.assertEqual(parseBindingRequest(data), BindingRequest(TID))

    def test_unknownComprehensionRequired(self):
        """
        An unknown comprehension-required attribute is rejected, naming it.
        """
        data = message(0x0001, [(0x7FFF, b"")])
        exc = self.assertRaises(MalformedStun, parseBindingRequest, data)
        self.assertEqual(
            str(exc), "unknown comprehension-required attribute 0x7fff"
        )

    def test_wrongType(self):
        """
        Messages other than Binding Requests are rejected.
        """
        for messageType in [0x0101, 0x0011, 0x0003]:
            data = message(messageType, [])
            self.assertRaises(MalformedStun, parseBindingRequest, data)

    def test_notStun(self):
        """
        Non-STUN data, including short data, is rejected.
        """
        for data in [b"", b"\x00\x01", flipped(bindingRequest(TID), [(5, 2), (3, 4)])]:
            self.assertRaises(MalformedStun, parseBindingRequest, data)

    def test_classicRequest(self):
        """
        An RFC 3489 request (no magic cookie, as Debian's stun-client sends)
        is accepted; the answer echoes its 16-byte transaction ID and
        carries a plain MAPPED-ADDRESS in 32 bytes.
        """
        classicID = b"\x07" * 4 + TID
        data = struct.pack("!HH", 0x0001, 8) + classicID + bytes.fromhex("0003000400000000")
        request = parseBindingRequest(data)
        self.assertTrue(request.classic)
        self.assertEqual(request.cookie + request.transactionID, classicID)
        answer = bindingResponse(request.transactionID, "192.0.2.1", 4000, request.cookie)
        self.assertEqual(len(answer), RESPONSE_SIZE_IPV4)
        self.assertEqual(answer[4:20], classicID)
        self.assertEqual(answer[20:], bytes.fromhex("00010008") + struct.pack("!BBH", 0, 1, 4000) + bytes([192, 0, 2, 1]))

    def test_modernRequestIsNotClassic(self):
        """
        A request with the magic cookie is not classic.
        """
        self.assertFalse(parseBindingRequest(bindingRequest(TID)).classic)

    def test_lengthMismatch(self):
        """
        The header length must equal the actual body length, and be a
        multiple of 4.
        """
        request = bindingRequest(TID)
        withAttribute = message(0x0001, [(0x8022, b"abcd")])
        for data in [request + b"\x00" * 4, withAttribute[:-4],
                     flipped(withAttribute, [(3, 8)]),
                     flipped(request, [(3, 2)]) + b"\x00\x00"]:
            self.assertRaises(MalformedStun, parseBindingRequest, data)

    def test_truncatedAttribute(self):
        """
        An attribute whose value or padding overruns the message is
        rejected.
        """
        valid = message(0x0001, [(0x8022, b"abcd")])
        overrun = valid[:22] + b"\x00\x05" + valid[24:]
        unpadded = overrun + b"e"
        unpadded = unpadded[:2] + b"\x00\x09" + unpadded[4:]
        for data in [overrun, unpadded, valid[:-1]]:
            self.assertRaises(MalformedStun, parseBindingRequest, data)

    def test_fingerprintNotLast(self):
        """
        A FINGERPRINT followed by another attribute is rejected.
        """
        data = message(0x0001, [], fingerprint=True)
        data = message(0x0001, [(0x8028, data[-4:]), (0x8022, b"x")])
        self.assertRaises(MalformedStun, parseBindingRequest, data)

    def test_fingerprintWrongSize(self):
        """
        A FINGERPRINT whose value is not 4 bytes is rejected.
        """
        data = message(0x0001, [(0x8028, b"\x00" * 8)])
        self.assertRaises(MalformedStun, parseBindingRequest, data)


class ResponseTests(SynchronousTestCase):
    """
    Tests for L{bindingResponse} and L{parseBindingResponse}.
    """

    def test_sizes(self):
        """
        Responses are exactly 32 bytes for IPv4 and 44 bytes for IPv6.
        """
        self.assertEqual(RESPONSE_SIZE_IPV4, 32)
        self.assertEqual(RESPONSE_SIZE_IPV6, 44)
        self.assertEqual(len(bindingResponse(TID, "192.0.2.1", 1)), 32)
        self.assertEqual(len(bindingResponse(TID, "2001:db8::1", 1)), 44)

    def test_roundTripIPv4(self):
        """
        An IPv4 response parses back to the same address and port.
        """
        data = bindingResponse(TID, "203.0.113.7", 65535)
        self.assertEqual(
            parseBindingResponse(data, TID), ("203.0.113.7", 65535)
        )

    def test_roundTripIPv6(self):
        """
        An IPv6 response parses back to the compressed address.
        """
        data = bindingResponse(TID, "2001:db8:0:0:0:0:0:0001", 0)
        self.assertEqual(parseBindingResponse(data, TID), ("2001:db8::1", 0))

    def test_ipv4Mapped(self):
        """
        An IPv4-mapped IPv6 address is sent as plain IPv4.
        """
        data = bindingResponse(TID, "::ffff:192.0.2.1", 3478)
        self.assertEqual(len(data), RESPONSE_SIZE_IPV4)
        self.assertEqual(data, bindingResponse(TID, "192.0.2.1", 3478))
        self.assertEqual(parseBindingResponse(data, TID), ("192.0.2.1", 3478))

    def test_onlyXorMappedAddress(self):
        """
        The response carries XOR-MAPPED-ADDRESS and nothing else.
        """
        data = bindingResponse(TID, "192.0.2.1", 1)
        self.assertEqual(data[:2], b"\x01\x01")
        self.assertEqual(data[20:24], b"\x00\x20\x00\x08")

    def test_badPort(self):
        """
        Ports outside 0..65535 are a programming error.
        """
        self.assertRaises(ValueError, bindingResponse, TID, "192.0.2.1", 65536)
        self.assertRaises(ValueError, bindingResponse, TID, "192.0.2.1", -1)

    def test_wrongTransactionID(self):
        """
        A response to another transaction is rejected.
        """
        data = bindingResponse(TID, "192.0.2.1", 1)
        self.assertRaises(MalformedStun, parseBindingResponse, data, b"x" * 12)

    def test_wrongType(self):
        """
        Requests and error responses are not success responses.
        """
        for data in [bindingRequest(TID), message(0x0111, [])]:
            self.assertRaises(MalformedStun, parseBindingResponse, data, TID)

    def test_mappedAddressFallback(self):
        """
        Without XOR-MAPPED-ADDRESS, the plain MAPPED-ADDRESS is used; with
        both, XOR-MAPPED-ADDRESS wins.
        """
        mapped = (0x0001, bytes.fromhex("00010d96c0000201"))
        data = message(0x0101, [mapped])
        self.assertEqual(parseBindingResponse(data, TID), ("192.0.2.1", 3478))
        xored = bindingResponse(TID, "198.51.100.2", 9)[20:]
        data = message(0x0101, [mapped]) + xored
        data = data[:2] + struct.pack("!H", len(data) - 20) + data[4:]
        self.assertEqual(parseBindingResponse(data, TID), ("198.51.100.2", 9))

    def test_noAddress(self):
        """
        A response without any mapped address is rejected.
        """
        data = message(0x0101, [(0x8022, b"server")])
        self.assertRaises(MalformedStun, parseBindingResponse, data, TID)

    def test_badAddress(self):
        """
        Unknown address families and wrong address lengths are rejected.
        """
        for value in ["0003a147e112a643", "0001a147e112a6", "0002a147e112a643",
                      "00"]:
            data = message(0x0101, [(0x0020, bytes.fromhex(value))])
            self.assertRaises(MalformedStun, parseBindingResponse, data, TID)

    def test_truncated(self):
        """
        Every proper prefix of a response is rejected.
        """
        data = bindingResponse(TID, "2001:db8::1", 1)
        for end in range(len(data)):
            self.assertRaises(
                MalformedStun, parseBindingResponse, data[:end], TID
            )


VALID_REQUESTS = [
    bindingRequest(TID),
    SAMPLE_REQUEST,
    message(
        0x0001, [(0x0006, b"abc"), (0x0024, b"\x00" * 4)], fingerprint=True
    ),
]
VALID_RESPONSES = [
    bindingResponse(TID, "192.0.2.1", 1),
    bindingResponse(TID, "2001:db8::1", 1),
    SAMPLE_IPV4_RESPONSE,
    SAMPLE_IPV6_RESPONSE,
]
mutations = st.lists(
    st.tuples(st.integers(0, 1000), st.integers(1, 255)), min_size=1,
    max_size=4,
)
fuzz = settings(derandomize=True, max_examples=2000, deadline=None)


class TotalityTests(SynchronousTestCase):
    """
    The parsers return or raise L{MalformedStun}, whatever the input.
    """

    def assertTotal(self, parse, data):
        """
        Call C{parse(data)}, allowing nothing but L{MalformedStun} to escape.
        """
        try:
            parse(data)
        except MalformedStun:
            pass

    @fuzz
    @given(st.binary(min_size=0, max_size=600))
    def test_requestArbitraryBytes(self, data):
        """
        L{parseBindingRequest} is total on arbitrary bytes, including ones
        behind a plausible request header.
        """
        self.assertTotal(parseBindingRequest, data)
        data += b"\x00" * (-len(data) % 4)
        prefixed = struct.pack("!HHI", 0x0001, len(data), MAGIC_COOKIE) + TID
        self.assertTotal(parseBindingRequest, prefixed + data)

    @fuzz
    @given(st.sampled_from(VALID_REQUESTS), mutations, st.integers(0, 8))
    def test_requestMutated(self, request, flips, cut):
        """
        L{parseBindingRequest} is total on damaged valid requests.
        """
        data = flipped(request, flips)
        self.assertTotal(parseBindingRequest, data)
        self.assertTotal(parseBindingRequest, data[: len(data) - cut])

    @fuzz
    @given(st.binary(min_size=0, max_size=600))
    def test_responseArbitraryBytes(self, data):
        """
        L{parseBindingResponse} is total on arbitrary bytes, including ones
        that start like a response to our transaction.
        """
        parse = partial(parseBindingResponse, transactionID=TID)
        self.assertTotal(parse, data)
        data += b"\x00" * (-len(data) % 4)
        prefixed = struct.pack("!HHI", 0x0101, len(data), MAGIC_COOKIE) + TID
        self.assertTotal(parse, prefixed + data)

    @fuzz
    @given(st.sampled_from(VALID_RESPONSES), mutations, st.integers(0, 8))
    def test_responseMutated(self, response, flips, cut):
        """
        L{parseBindingResponse} is total on damaged valid responses.
        """
        tid = response[8:20]
        data = flipped(response, flips)
        parse = partial(parseBindingResponse, transactionID=tid)
        self.assertTotal(parse, data)
        self.assertTotal(parse, data[: len(data) - cut])
