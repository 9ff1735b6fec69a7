"""
Tests for L{netservices.info.tcp}, with in-memory transports.
"""

import json

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from netservices._common.proxy import ProxyHeaderFactory
from netservices.info.tcp import TCPInfoFactory


def connect(factory, peer, host):
    """
    Connect a protocol from C{factory} to a L{StringTransport}.
    """
    transport = StringTransport(hostAddress=host, peerAddress=peer)
    protocol = factory.buildProtocol(peer)
    protocol.makeConnection(transport)
    return protocol, transport


class TCPInfoProtocolTests(SynchronousTestCase):
    """
    L{TCPInfoProtocol} answers on connect and closes.
    """

    peer = IPv4Address("TCP", "192.0.2.7", 40000)
    host = IPv4Address("TCP", "192.0.2.1", 7007)

    def test_answersAndCloses(self):
        """
        On connect the client gets one text line with its address and port,
        and the connection is closed.
        """
        _, transport = connect(TCPInfoFactory(), self.peer, self.host)
        self.assertEqual(
            transport.value(),
            b"transport=tcp ip=192.0.2.7 port=40000 local_ip=192.0.2.1"
            b" local_port=7007 tls=no proxy=no\n",
        )
        self.assertTrue(transport.disconnecting)

    def test_json(self):
        """
        With C{wantJSON} the answer is a JSON object.
        """
        peer = IPv6Address("TCP", "2001:db8::7", 40000)
        host = IPv6Address("TCP", "2001:db8::1", 7007)
        _, transport = connect(TCPInfoFactory(wantJSON=True), peer, host)
        answer = json.loads(transport.value())
        self.assertEqual((answer["ip"], answer["port"]), ("2001:db8::7", 40000))
        self.assertEqual(answer["local_port"], 7007)

    def test_logsStructuredEvent(self):
        """
        Each connection is logged as one event with the addresses as fields.
        """
        with capturedLogs() as events:
            connect(TCPInfoFactory(), self.peer, self.host)
        [event] = [e for e in events if "ip" in e]
        self.assertEqual(
            {k: event[k] for k in ("ip", "port", "local_ip", "local_port", "tls", "proxy")},
            {
                "ip": "192.0.2.7",
                "port": 40000,
                "local_ip": "192.0.2.1",
                "local_port": 7007,
                "tls": False,
                "proxy": False,
            },
        )

    def test_ignoresInput(self):
        """
        Whatever the client sends is ignored.
        """
        protocol, transport = connect(TCPInfoFactory(), self.peer, self.host)
        protocol.dataReceived(b"x" * 100000)
        self.assertEqual(transport.value().count(b"\n"), 1)


class BehindProxyTests(SynchronousTestCase):
    """
    Behind a PROXY header, the answer waits for the header and carries the
    proxied address.
    """

    def test_answerWaitsForHeader(self):
        """
        Nothing is sent before the header is complete; then the answer
        names the client and server from the header, with proxy=yes.
        """
        factory = ProxyHeaderFactory(TCPInfoFactory(), Clock())
        balancer = IPv4Address("TCP", "10.0.0.1", 50000)
        protocol, transport = connect(
            factory, balancer, IPv4Address("TCP", "10.0.0.2", 7007)
        )
        header = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 7007\r\n"
        protocol.dataReceived(header[:10])
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(header[10:])
        self.assertEqual(
            transport.value(),
            b"transport=tcp ip=203.0.113.7 port=40000 local_ip=192.0.2.1"
            b" local_port=7007 tls=no proxy=yes\n",
        )


class UNIXSocketTests(SynchronousTestCase):
    """
    Over a UNIX socket there is no IP address to tell.
    """

    def test_unix(self):
        """
        The answer says transport=unix with the socket's path, escaped so the
        text form still splits on spaces.
        """
        from twisted.internet.address import UNIXAddress

        _, transport = connect(
            TCPInfoFactory(), UNIXAddress(None), UNIXAddress(b"/run/a b.sock")
        )
        self.assertEqual(
            transport.value(),
            b"transport=unix ip= port=0 local_ip=/run/a%20b.sock"
            b" local_port=0 tls=no proxy=no\n",
        )
