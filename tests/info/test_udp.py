"""
Tests for L{netservices.info.udp}, with a fake datagram transport.
"""

import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from netservices._common.datagram import DatagramInfo
from netservices._common.ratelimit import PrefixRateLimiter, RateLimits
from netservices._common.udp import DatagramGuard
from netservices.info import stun
from netservices.info.udp import UDPInfoProtocol
from netservices.info.wire import makeQuery, parseAnswer

UNICAST = DatagramInfo("192.0.2.1", "192.0.2.1", 2, 64)


class FakeUDPTransport(FakeDatagramTransport):
    """
    A L{FakeDatagramTransport} that knows its own address.
    """

    def getHost(self):
        return IPv4Address("UDP", "192.0.2.1", 3478)


def makeProtocol(limits=RateLimits()):
    """
    @return: a L{UDPInfoProtocol} on a L{FakeUDPTransport} with a clock
        that never advances.
    """
    clock = Clock()
    guard = DatagramGuard(limits, clock, Logger(observer=lambda event: None))
    protocol = UDPInfoProtocol(guard, PrefixRateLimiter(limits, clock), guard.refusals.log)
    protocol.makeConnection(FakeUDPTransport())
    return protocol


def send(protocol, data, source=("198.51.100.9", 40000), info=UNICAST):
    """
    Deliver one datagram and return what was written in response.
    """
    before = len(protocol.transport.written)
    protocol.datagramReceivedWithInfo(data, source, info)
    return protocol.transport.written[before:]


class InfoQueryTests(SynchronousTestCase):
    """
    Info queries are answered, but never with more bytes than they carried.
    """

    def test_text(self):
        """
        A padded text query gets the text answer, sent to the source.
        """
        protocol = makeProtocol()
        [(answer, addr)] = send(protocol, makeQuery(False))
        self.assertEqual(addr, ("198.51.100.9", 40000))
        sighting = parseAnswer(answer)
        self.assertEqual(
            (sighting.transport, sighting.ip, sighting.port, sighting.localIP, sighting.localPort),
            ("udp", "198.51.100.9", 40000, "192.0.2.1", 3478),
        )
        self.assertTrue(answer.startswith(b"transport=udp "))

    def test_json(self):
        """
        A query whose first word is C{json} gets JSON.
        """
        [(answer, _)] = send(makeProtocol(), makeQuery(True))
        self.assertEqual(json.loads(answer)["ip"], "198.51.100.9")

    def test_shortQueryNotAnswered(self):
        """
        A query shorter than its answer gets nothing, and is counted.
        """
        protocol = makeProtocol()
        self.assertEqual(send(protocol, b"hello"), [])
        self.assertEqual(
            protocol.guard.refusals.counts["request-shorter-than-answer"], 1
        )

    def test_policyApplies(self):
        """
        A datagram to a broadcast address or from a reserved port gets no
        answer.
        """
        protocol = makeProtocol()
        broadcast = DatagramInfo("192.0.2.255", "192.0.2.1", 2, 64)
        self.assertEqual(send(protocol, makeQuery(False), info=broadcast), [])
        self.assertEqual(send(protocol, makeQuery(False), source=("198.51.100.9", 19)), [])
        self.assertEqual(sum(protocol.guard.refusals.counts.values()), 2)


class STUNTests(SynchronousTestCase):
    """
    STUN Binding Requests get XOR-MAPPED-ADDRESS, at their own rate limit.
    """

    def test_binding(self):
        """
        A Binding Request gets a 32-byte response with the source address.
        """
        transactionID = os.urandom(12)
        [(answer, _)] = send(makeProtocol(), stun.bindingRequest(transactionID))
        self.assertEqual(len(answer), stun.RESPONSE_SIZE_IPV4)
        self.assertEqual(
            stun.parseBindingResponse(answer, transactionID), ("198.51.100.9", 40000)
        )

    def test_malformed(self):
        """
        A malformed STUN message gets no answer and is counted.
        """
        protocol = makeProtocol()
        request = bytearray(stun.bindingRequest(b"t" * 12) + b"\x00\x01\x00\x04abcd")
        request[3] = 4  # the attribute claims to be longer than it is
        request[22:24] = b"\x00\x09"
        self.assertEqual(send(protocol, bytes(request)), [])
        self.assertEqual(protocol.guard.refusals.counts["malformed-stun"], 1)

    def test_rateLimited(self):
        """
        STUN answers to one prefix stop at the burst of the STUN limiter.
        """
        protocol = makeProtocol(RateLimits(rate=1, burst=3))
        answers = [send(protocol, stun.bindingRequest(os.urandom(12))) for _ in range(10)]
        self.assertEqual(sum(1 for a in answers if a), 3)


#: Payload starts: STUN-looking headers, queries, and anything at all.
_starts = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda t: stun.bindingRequest(t), st.binary(min_size=12, max_size=12)),
    st.sampled_from([b"json\n", b"text\n", b"\x00\x01\x00\x00!\x12\xa4B"]),
)


class AmplificationPropertyTests(SynchronousTestCase):
    """
    Over request sizes 0..65,507, no answer is larger than allowed.
    """

    @settings(derandomize=True, max_examples=1500, deadline=None)
    @given(
        start=_starts,
        size=st.integers(min_value=0, max_value=65507),
        fill=st.integers(0, 255),
        ipv6=st.booleans(),
    )
    def test_neverAmplifies(self, start, size, fill, ipv6):
        """
        Info answers are never longer than the request; STUN answers are
        never longer than the fixed response size of the family and go only
        to requests of at least a STUN header (an amplification of at most
        1.6 for IPv4 and 2.2 for IPv6); nothing raises.
        """
        source = ("2001:db8::9", 40000) if ipv6 else ("198.51.100.9", 40000)
        limit = stun.RESPONSE_SIZE_IPV6 if ipv6 else stun.RESPONSE_SIZE_IPV4
        data = (start + bytes([fill]) * size)[:size] if size >= len(start) else start[:size]
        protocol = makeProtocol(RateLimits(rate=0, burst=1e9, globalRate=0))
        written = send(protocol, data, source=source)
        self.assertLessEqual(len(written), 1)
        for answer, _ in written:
            if stun.looksLikeStun(data):
                self.assertEqual(len(answer), limit)
                self.assertGreaterEqual(len(data), stun.HEADER_SIZE)
            else:
                self.assertLessEqual(len(answer), len(data))
