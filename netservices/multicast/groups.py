# -*- test-case-name: tests.multicast.test_groups -*-
"""
Groups as data: the C{--group} grammar shared by the service and the tools.

    [SOURCE[,SOURCE...]@]GROUP[+N][:PORT]

  - C{239.1.2.3}, C{239.1.2.3:5000}, C{ff15::1}, C{[ff15::1]:5000};
  - C{10.0.0.1@232.1.1.1}, C{fd00::1,fd00::2@[ff35::8000:1]:5000}
    (source-specific: only datagrams from those sources);
  - C{239.1.2.3+4}: 4 groups, C{239.1.2.3} to C{239.1.2.6}
    (C{[ff15::1+4]:5000} for IPv6 with a port).

The address must be multicast; one in a source-specific range (232/8,
ff3x::/32) needs a source; sources are unicast addresses of the group's
family.
"""

from __future__ import annotations

import ipaddress

import attrs

#: The port used when a group names none.
DEFAULT_PORT = 5007

#: Most groups one C{GROUP+N} may stand for.
MAX_RANGE = 1024

_SSM4 = ipaddress.ip_network("232.0.0.0/8")


@attrs.frozen
class Group:
    """
    One group to join or send to.

    @ivar address: the group address (compressed text).
    @ivar port: the UDP port.
    @ivar sources: the sources of a source-specific join; empty for any
        source.
    """

    address: str
    port: int
    sources: tuple[str, ...] = ()

    @property
    def version(self) -> int:
        """
        4 or 6.
        """
        return ipaddress.ip_address(self.address).version

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.version == 6 else self.address
        prefix = ",".join(self.sources) + "@" if self.sources else ""
        return f"{prefix}{host}:{self.port}"


def isSourceSpecific(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """
    @return: whether C{address} is in an SSM range: 232/8 or ff3x::/32.
    """
    if address.version == 4:
        return address in _SSM4
    raw = address.packed
    return raw[0] == 0xFF and raw[1] >> 4 == 3 and raw[2] == 0 and raw[3] == 0


def _address(text: str, what: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an IP address") from None


def parseGroups(text: str, defaultPort: int = DEFAULT_PORT) -> list[Group]:
    """
    Parse one C{--group} value.

    @return: the groups it stands for (several for C{GROUP+N}).
    @raise ValueError: with a message fit for the user.
    """
    sourceText, at, rest = text.rpartition("@")
    if not at:
        sourceText, rest = "", text
    port = defaultPort
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket:
            raise ValueError(f"{text!r}: missing ']'")
        if after:
            if not after.startswith(":"):
                raise ValueError(f"{text!r}: expected :PORT after ']'")
            port = _port(after[1:], text)
    elif rest.count(":") == 1:
        host, _, portText = rest.partition(":")
        port = _port(portText, text)
    else:
        host = rest
    count = 1
    if "+" in host:
        host, _, countText = host.partition("+")
        if not (countText.isascii() and countText.isdigit()) or not (
            1 <= int(countText) <= MAX_RANGE
        ):
            raise ValueError(f"{text!r}: +N must be a number of groups, 1-{MAX_RANGE}")
        count = int(countText)
    first = _address(host, "group")
    sources: list[str] = []
    for s in filter(None, sourceText.split(",")) if sourceText else ():
        source = _address(s, "source")
        if source.version != first.version:
            raise ValueError(f"source {s} and group {host} are not of one IP version")
        if source.is_multicast or source.is_unspecified:
            raise ValueError(f"source {s} is not a unicast address")
        if str(source) not in sources:
            sources.append(str(source))
    if at and not sources:
        raise ValueError(f"{text!r}: no source before '@'")
    groups = []
    for i in range(count):
        try:
            address = first + i
        except ipaddress.AddressValueError:
            raise ValueError(f"{text!r}: the range runs past the address space") from None
        if not address.is_multicast:
            raise ValueError(f"{address} is not a multicast address")
        if isSourceSpecific(address) and not sources:
            net = "232.0.0.0/8" if address.version == 4 else "ff3x::/32"
            raise ValueError(
                f"{address} is in the source-specific range {net}: name the"
                f" source, SOURCE@{address}"
            )
        groups.append(Group(str(address), port, tuple(sources)))
    return groups


def _port(text: str, whole: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{whole!r}: bad port {text!r} (1-65535)")
    return int(text)
