# -*- test-case-name: tests._common.test_addresses -*-
"""
Small helpers for IP addresses: normalising, grouping by prefix and parsing
C{HOST[:PORT]} arguments.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def parseIP(host: str) -> IPAddress | None:
    """
    Parse C{host} as an IP address, turning IPv4-mapped IPv6 addresses
    (C{::ffff:192.0.2.1}, as a dual-stack socket reports IPv4 peers) into
    plain IPv4 and dropping any C{%zone}.

    @return: the address, or L{None} if C{host} is not an IP address.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def isLoopback(host: str) -> bool:
    """
    @return: whether C{host} is a loopback IP address (127.0.0.0/8, ::1,
        and IPv4-mapped forms); L{False} for anything that is not an IP
        address.
    """
    address = parseIP(host)
    return address is not None and address.is_loopback


_V4_MAPPED = bytes(10) + b"\xff\xff"


def packIP(host: str) -> bytes | None:
    """
    The fast form of L{parseIP}, for work done per datagram: C{host} as 4
    packed bytes for IPv4 (also when IPv4-mapped), 16 for IPv6.

    @return: the packed address, or L{None} if C{host} is not an IP address.
    """
    try:
        if ":" not in host:
            return socket.inet_pton(socket.AF_INET, host)
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    except (OSError, ValueError):
        return None
    return packed[12:] if packed[:12] == _V4_MAPPED else packed


def displayHost(host: str) -> str:
    """
    @return: C{host} as people expect to read it: IPv4-mapped IPv6 addresses
        as IPv4, IPv6 addresses compressed, anything else unchanged.
    """
    address = parseIP(host)
    return host if address is None else str(address)


def prefixKey(host: str, ipv4Prefix: int, ipv6Prefix: int) -> str:
    """
    Group C{host} with its neighbours: the network of C{ipv4Prefix} bits for
    IPv4 and C{ipv6Prefix} bits for IPv6, because one attacker (or one home
    network) usually holds a whole IPv6 /64 or more, never just one address.

    @return: the network as text, e.g. C{"192.0.2.0/24"}; C{host} itself when
        it is not an IP address (a UNIX socket path, say).
    """
    address = parseIP(host)
    if address is None:
        return host
    bits = ipv4Prefix if address.version == 4 else ipv6Prefix
    return str(ipaddress.ip_network((address, bits), strict=False))


def joinHostPort(host: str, port: int) -> str:
    """
    @return: C{host:port}, with IPv6 addresses in brackets.
    """
    host = displayHost(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def splitHostPort(text: str, defaultPort: int) -> tuple[str, int]:
    """
    Parse a C{HOST[:PORT]} command-line argument; IPv6 addresses go in
    brackets when a port follows (C{[::1]:7007}) and may stand bare without one.

    @raise ValueError: with a message fit for the user.
    """
    host, port = text, str(defaultPort)
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"missing ']' in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected ':PORT' after ']' in {text!r}")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" in text and parseIP(text) is None:
        raise ValueError(f"{text!r} is not HOST:PORT (put IPv6 addresses in brackets)")
    if not host:
        raise ValueError(f"no host in {text!r}")
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r} in {text!r}: expected 1-65535")
    return host, int(port)
