"""
Tests for L{netservices._common.addresses}.
"""

from __future__ import annotations

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from netservices._common.addresses import (
    displayHost,
    isLoopback,
    joinHostPort,
    parseIP,
    prefixKey,
    splitHostPort,
)


class ParseIPTests(SynchronousTestCase):
    """
    L{parseIP}.
    """

    def test_ipv4(self):
        """
        Dotted quads parse to L{ipaddress.IPv4Address}.
        """
        self.assertEqual(parseIP("192.0.2.1"), ipaddress.IPv4Address("192.0.2.1"))

    def test_ipv6(self):
        """
        IPv6 addresses parse to L{ipaddress.IPv6Address}, in any spelling.
        """
        self.assertEqual(
            parseIP("2001:DB8:0:0:0:0:0:1"), ipaddress.IPv6Address("2001:db8::1")
        )

    def test_v4Mapped(self):
        """
        IPv4-mapped IPv6 addresses, as a dual-stack socket reports IPv4
        peers, come back as plain IPv4.
        """
        self.assertEqual(
            parseIP("::ffff:192.0.2.1"), ipaddress.IPv4Address("192.0.2.1")
        )

    def test_zone(self):
        """
        A C{%zone} suffix is dropped, also from a v4-mapped address.
        """
        self.assertEqual(parseIP("fe80::1%eth0"), ipaddress.IPv6Address("fe80::1"))
        self.assertEqual(parseIP("fe80::1%2"), ipaddress.IPv6Address("fe80::1"))
        self.assertEqual(
            parseIP("::ffff:192.0.2.1%eth0"), ipaddress.IPv4Address("192.0.2.1")
        )

    def test_notAnAddress(self):
        """
        Host names, paths, empty text and near-misses give L{None}.
        """
        for text in ["example.com", "/run/x.sock", "", "1.2.3", "1.2.3.256", ":::"]:
            self.assertIsNone(parseIP(text), text)


class IsLoopbackTests(SynchronousTestCase):
    """
    L{isLoopback}.
    """

    def test_loopback(self) -> None:
        """
        127.0.0.0/8, ::1 and their IPv4-mapped form are loopback; other
        addresses and names are not.
        """
        for host in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "0::1"):
            self.assertTrue(isLoopback(host), host)
        for host in ("10.77.0.1", "192.0.2.1", "::2", "localhost", "", "not an address"):
            self.assertFalse(isLoopback(host), host)


class DisplayHostTests(SynchronousTestCase):
    """
    L{displayHost}.
    """

    def test_v4Mapped(self):
        """
        IPv4-mapped addresses are shown as IPv4.
        """
        self.assertEqual(displayHost("::ffff:203.0.113.7"), "203.0.113.7")

    def test_ipv6Compressed(self):
        """
        IPv6 addresses are shown compressed and lower case.
        """
        self.assertEqual(displayHost("2001:DB8:0:0:0:0:0:1"), "2001:db8::1")

    def test_other(self):
        """
        Anything that is not an IP address is returned unchanged.
        """
        for text in ["example.com", "/run/x.sock", ""]:
            self.assertEqual(displayHost(text), text)


class PrefixKeyTests(SynchronousTestCase):
    """
    L{prefixKey}.
    """

    def test_ipv4Slash24(self):
        """
        IPv4 addresses group by their /24.
        """
        self.assertEqual(prefixKey("192.0.2.77", 24, 56), "192.0.2.0/24")
        self.assertEqual(
            prefixKey("192.0.2.1", 24, 56), prefixKey("192.0.2.254", 24, 56)
        )
        self.assertNotEqual(
            prefixKey("192.0.2.1", 24, 56), prefixKey("192.0.3.1", 24, 56)
        )

    def test_v4MappedGroupsWithIPv4(self):
        """
        A v4-mapped address falls in the same group as the plain IPv4
        address, so a dual-stack listener shares buckets with an IPv4 one.
        """
        self.assertEqual(prefixKey("::ffff:192.0.2.9", 24, 56), "192.0.2.0/24")

    def test_ipv6Slash56(self):
        """
        IPv6 addresses group by the IPv6 prefix length, here /56.
        """
        self.assertEqual(
            prefixKey("2001:db8:1:2ff::1", 24, 56), "2001:db8:1:200::/56"
        )
        self.assertEqual(
            prefixKey("2001:db8:1:200::1", 24, 56),
            prefixKey("2001:db8:1:2ff:ffff::1", 24, 56),
        )
        self.assertNotEqual(
            prefixKey("2001:db8:1:200::1", 24, 56),
            prefixKey("2001:db8:1:300::1", 24, 56),
        )

    def test_ipv6Slash64(self):
        """
        With a /64 prefix, the interface identifier is ignored but the
        subnet is not.
        """
        self.assertEqual(
            prefixKey("2001:db8:0:1:aaaa::1", 32, 64), "2001:db8:0:1::/64"
        )
        self.assertEqual(
            prefixKey("2001:db8:0:1::1", 32, 64),
            prefixKey("2001:db8:0:1:ffff:ffff:ffff:ffff", 32, 64),
        )
        self.assertNotEqual(
            prefixKey("2001:db8:0:1::1", 32, 64), prefixKey("2001:db8:0:2::1", 32, 64)
        )

    def test_zoneDropped(self):
        """
        Link-local addresses with a zone group like those without one.
        """
        self.assertEqual(prefixKey("fe80::1%eth0", 32, 64), "fe80::/64")

    def test_ipv4Slash32(self):
        """
        A /32 keeps each IPv4 address apart.
        """
        self.assertEqual(prefixKey("127.0.0.1", 32, 64), "127.0.0.1/32")

    def test_notAnAddress(self):
        """
        Anything that is not an IP address is its own group.
        """
        for text in ["/run/x.sock", "example.com", ""]:
            self.assertEqual(prefixKey(text, 24, 56), text)


class JoinHostPortTests(SynchronousTestCase):
    """
    L{joinHostPort}.
    """

    def test_ipv4(self):
        """
        IPv4 hosts and names are joined with a colon.
        """
        self.assertEqual(joinHostPort("192.0.2.1", 7007), "192.0.2.1:7007")
        self.assertEqual(joinHostPort("example.com", 80), "example.com:80")

    def test_ipv6(self):
        """
        IPv6 hosts go in brackets, compressed.
        """
        self.assertEqual(joinHostPort("::1", 7007), "[::1]:7007")
        self.assertEqual(joinHostPort("2001:DB8:0::1", 1), "[2001:db8::1]:1")

    def test_v4Mapped(self):
        """
        v4-mapped hosts are shown as IPv4, without brackets.
        """
        self.assertEqual(joinHostPort("::ffff:192.0.2.1", 40000), "192.0.2.1:40000")


class SplitHostPortTests(SynchronousTestCase):
    """
    L{splitHostPort}.
    """

    def test_hostOnly(self):
        """
        Without a port, the default port is used.
        """
        self.assertEqual(splitHostPort("example.com", 7007), ("example.com", 7007))
        self.assertEqual(splitHostPort("192.0.2.1", 7007), ("192.0.2.1", 7007))

    def test_hostAndPort(self):
        """
        C{HOST:PORT} is split.
        """
        self.assertEqual(splitHostPort("example.com:80", 7007), ("example.com", 80))
        self.assertEqual(splitHostPort("192.0.2.1:65535", 7007), ("192.0.2.1", 65535))

    def test_bracketedIPv6(self):
        """
        IPv6 addresses in brackets may be followed by a port, or not.
        """
        self.assertEqual(splitHostPort("[::1]:8080", 7007), ("::1", 8080))
        self.assertEqual(splitHostPort("[2001:db8::1]", 7007), ("2001:db8::1", 7007))

    def test_bareIPv6(self):
        """
        A bare IPv6 address takes the default port; its colons are not
        mistaken for a port separator.
        """
        self.assertEqual(splitHostPort("::1", 7007), ("::1", 7007))
        self.assertEqual(splitHostPort("2001:db8::80", 7007), ("2001:db8::80", 7007))

    def assertBad(self, text: str, *fragments: str) -> None:
        """
        Assert that C{text} is refused with a L{ValueError} whose message
        contains each of C{fragments} and C{text} itself.
        """
        error = self.assertRaises(ValueError, splitHostPort, text, 7007)
        for fragment in (*fragments, repr(text)):
            self.assertIn(fragment, str(error))

    def test_badPorts(self):
        """
        Ports that are not decimal numbers from 1 to 65535 are refused with
        a message that names them.
        """
        for text in [
            "host:0",
            "host:65536",
            "host:-1",
            "host:",
            "host:http",
            "host: 80",
            "[::1]:",
            "[::1]:0",
        ]:
            self.assertBad(text, "bad port")

    def test_nonASCIIDigits(self):
        """
        Digits from other scripts are not port numbers: they are refused
        with the same message as other bad ports, not accepted (Arabic-Indic
        digits, which C{int} accepts) nor refused with C{int}'s own message
        (superscripts, which C{str.isdigit} accepts but C{int} does not).
        """
        self.assertBad("host:\u0663\u0660", "bad port")
        self.assertBad("host:\u00b2", "bad port")

    def test_missingHost(self):
        """
        A port without a host is refused.
        """
        self.assertBad(":80", "no host")
        self.assertBad("[]:80", "no host")
        self.assertBad("", "no host")

    def test_missingBracket(self):
        """
        An opening bracket without its closing one is refused.
        """
        self.assertBad("[::1", "missing ']'")
        self.assertBad("[::1:80", "missing ']'")

    def test_junkAfterBracket(self):
        """
        After C{]}, only C{:PORT} may follow.
        """
        self.assertBad("[::1]80", "expected ':PORT'")

    def test_severalColonsNotIPv6(self):
        """
        Text with several colons that is not an IPv6 address is refused,
        with a hint about brackets.
        """
        self.assertBad("host:80:90", "put IPv6 addresses in brackets")
