"""
Tests for L{netservices.multicast.groups}.
"""

from twisted.trial.unittest import SynchronousTestCase

from netservices.multicast.groups import DEFAULT_PORT, Group, isSourceSpecific, parseGroups

import ipaddress


class ParseGroupsTests(SynchronousTestCase):
    """
    The C{--group} grammar.
    """

    def test_forms(self) -> None:
        """
        IPv4 and IPv6 groups, with and without a port.
        """
        self.assertEqual(parseGroups("239.1.2.3"), [Group("239.1.2.3", DEFAULT_PORT)])
        self.assertEqual(parseGroups("239.1.2.3:5000"), [Group("239.1.2.3", 5000)])
        self.assertEqual(parseGroups("ff15::1"), [Group("ff15::1", DEFAULT_PORT)])
        self.assertEqual(parseGroups("[ff15::1]:5000"), [Group("ff15::1", 5000)])
        self.assertEqual(parseGroups("[ff15::1]", 9), [Group("ff15::1", 9)])

    def test_sources(self) -> None:
        """
        Sources before C{@}, duplicates removed; SSM ranges accept them.
        """
        self.assertEqual(
            parseGroups("10.0.0.1,10.0.0.2,10.0.0.1@232.1.1.1:7"),
            [Group("232.1.1.1", 7, ("10.0.0.1", "10.0.0.2"))],
        )
        self.assertEqual(
            parseGroups("fd00::1@[ff35::8000:1]:5000"),
            [Group("ff35::8000:1", 5000, ("fd00::1",))],
        )
        self.assertEqual(str(parseGroups("fd00::1@[ff35::1]:5")[0]), "fd00::1@[ff35::1]:5")

    def test_ranges(self) -> None:
        """
        C{GROUP+N} is N consecutive groups.
        """
        self.assertEqual(
            [g.address for g in parseGroups("239.1.1.254+3:9")],
            ["239.1.1.254", "239.1.1.255", "239.1.2.0"],
        )
        self.assertEqual(
            [g.address for g in parseGroups("[ff15::1+2]:9")], ["ff15::1", "ff15::2"]
        )

    def test_errors(self) -> None:
        """
        Bad groups are refused with a message naming the problem.
        """
        cases = {
            "10.0.0.1": "not a multicast address",
            "232.1.1.1": "source-specific range 232.0.0.0/8",
            "ff35::1": "ff3x::/32",
            "nonsense": "not an IP address",
            "239.1.1.1:0": "bad port",
            "239.1.1.1:70000": "bad port",
            "[ff15::1": "missing ']'",
            "239.1.1.1+0": "+N",
            "239.255.255.255+2": "not a multicast",
            "fd00::1@239.1.1.1": "not of one IP version",
            "239.1.1.2@239.1.1.1": "not a unicast",
            "@239.1.1.1": "no source",
        }
        for text, message in cases.items():
            with self.assertRaises(ValueError, msg=text) as caught:
                parseGroups(text)
            self.assertIn(message, str(caught.exception), text)

    def test_sourceSpecificRanges(self) -> None:
        """
        232/8 and ff3x::/32 are source-specific; their neighbours are not.
        """
        for text, ssm in [
            ("232.0.0.1", True), ("233.0.0.1", False), ("ff3e::1", True),
            ("ff35::8000:1", True), ("ff3e:40:fd00::1", False), ("ff1e::1", False),
        ]:
            self.assertEqual(isSourceSpecific(ipaddress.ip_address(text)), ssm, text)
