"""
Tests for L{netservices.info.wire}.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from netservices.info.wire import (
    QUERY_SIZE,
    Sighting,
    formatJSON,
    formatText,
    makeQuery,
    parseAnswer,
    queryWantsJSON,
)

V4 = Sighting("tcp", "192.0.2.7", 40000, "192.0.2.1", 7007, tls=False, proxy=True)
V6 = Sighting(
    "http",
    "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
    65535,
    "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe",
    65535,
    tls=True,
    proxy=True,
)


class FormatTests(SynchronousTestCase):
    """
    The text and JSON forms of an answer.
    """

    def test_text(self):
        """
        The text form is one line of key=value pairs in a fixed order.
        """
        self.assertEqual(
            formatText(V4),
            b"transport=tcp ip=192.0.2.7 port=40000 local_ip=192.0.2.1"
            b" local_port=7007 tls=no proxy=yes\n",
        )

    def test_json(self):
        """
        The JSON form is one line holding an object with the same keys.
        """
        data = formatJSON(V4)
        self.assertTrue(data.endswith(b"\n"))
        self.assertEqual(data.count(b"\n"), 1)
        self.assertEqual(
            json.loads(data),
            {
                "transport": "tcp",
                "ip": "192.0.2.7",
                "port": 40000,
                "local_ip": "192.0.2.1",
                "local_port": 7007,
                "tls": False,
                "proxy": True,
            },
        )

    def test_ipv4Mapped(self):
        """
        IPv4 clients seen on a dual-stack socket are shown as IPv4.
        """
        sighting = Sighting("udp", "::ffff:192.0.2.7", 1, "::ffff:192.0.2.1", 2)
        self.assertEqual((sighting.ip, sighting.localIP), ("192.0.2.7", "192.0.2.1"))

    def test_roundTrip(self):
        """
        Both forms parse back to the same sighting.
        """
        for sighting in (V4, V6):
            self.assertEqual(parseAnswer(formatText(sighting)), sighting)
            self.assertEqual(parseAnswer(formatJSON(sighting)), sighting)

    def test_notAnAnswer(self):
        """
        Anything that is not a complete answer raises L{ValueError}.
        """
        for data in [
            b"",
            b"hello world",
            b"\xff\xfe",
            b"{not json",
            b"[1, 2]",
            b"transport=tcp ip=1.2.3.4",
            b"transport=tcp ip=1.2.3.4 port=x local_ip=1.2.3.4 local_port=1 tls=no proxy=no",
            b'{"transport": "tcp"}',
        ]:
            self.assertRaises(ValueError, parseAnswer, data)


    def test_errorsQuoteLittle(self):
        """
        What a hostile peer sent is quoted in errors only in part.
        """
        error = self.assertRaises(ValueError, parseAnswer, b"x" * 100000)
        self.assertLess(len(str(error)), 100)


class QueryTests(SynchronousTestCase):
    """
    The udp-info query format.
    """

    def test_longestAnswerFits(self):
        """
        The longest possible answer (JSON, two full IPv6 addresses, 5-digit
        ports) is no longer than the padded query, so the server can always
        answer our client.
        """
        self.assertLessEqual(len(formatJSON(V6)), QUERY_SIZE)
        self.assertLessEqual(len(formatText(V6)), QUERY_SIZE)
        self.assertEqual(len(makeQuery(True)), QUERY_SIZE)
        self.assertEqual(len(makeQuery(False)), QUERY_SIZE)

    def test_format(self):
        """
        The query's first word selects JSON; anything else means text.
        """
        self.assertTrue(queryWantsJSON(makeQuery(True)))
        self.assertFalse(queryWantsJSON(makeQuery(False)))
        self.assertTrue(queryWantsJSON(b"JSON please" + b" " * 100))
        self.assertFalse(queryWantsJSON(b"jsonx"))
        self.assertFalse(queryWantsJSON(b""))
