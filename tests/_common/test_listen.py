"""
Tests for L{netservices._common.listen} and L{netservices._common.service}.
"""

from __future__ import annotations

import socket

from OpenSSL import SSL

from twisted.application import service
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netservices._common.datagram import InfoDatagramPort
from netservices._common.limits import ConnectionLimits
from netservices._common.listen import (
    DatagramAddress,
    DatagramListener,
    StreamListener,
    describeAddress,
    errorText,
    listeningAddresses,
    nonNegativeFloat,
    nonNegativeInt,
    parseDatagramDescription,
    parseStreamDescription,
    portNumber,
    positiveInt,
)
from netservices._common.proxy import ProxyHeaderEndpoint, ProxyHeaderFactory
from netservices._common.service import CallOnStop
from netservices._common.tls import createSelfSignedCertificate
from netservices.info.tap import TCPInfoOptions, UDPInfoOptions
from netservices.testing import writeCertificate
from tests._common.test_tls import assertPolicyCiphers, certify, pem, temporaryDirectory


class ParseDatagramDescriptionTests(SynchronousTestCase):
    """
    L{parseDatagramDescription}.
    """

    def test_port(self):
        """
        C{udp:PORT} listens on all IPv4 addresses.
        """
        self.assertEqual(parseDatagramDescription("udp:9000"), DatagramAddress(9000, ""))
        self.assertEqual(parseDatagramDescription("udp:0"), DatagramAddress(0, ""))

    def test_interface(self):
        """
        C{interface=} takes an IPv4 address, or an IPv6 address with its
        colons escaped.
        """
        self.assertEqual(
            parseDatagramDescription("udp:9000:interface=127.0.0.1"),
            DatagramAddress(9000, "127.0.0.1"),
        )
        self.assertEqual(
            parseDatagramDescription(r"udp:9000:interface=\:\:1"),
            DatagramAddress(9000, "::1"),
        )
        self.assertEqual(
            parseDatagramDescription(r"udp:9000:interface=\:\:"),
            DatagramAddress(9000, "::"),
        )

    def assertBad(self, description: str, fragment: str) -> None:
        """
        Assert that C{description} is refused with a L{ValueError} whose
        one-line message contains C{fragment}.
        """
        error = self.assertRaises(ValueError, parseDatagramDescription, description)
        self.assertIn(fragment, str(error))
        self.assertNotIn("\n", str(error))

    def test_badPort(self):
        """
        Ports that are not decimal numbers up to 65535 are refused.
        """
        for description in [
            "udp:x",
            "udp:",
            "udp:65536",
            "udp:-1",
            "udp:\u00b2",
            "udp:\u0663",
        ]:
            self.assertBad(description, "bad port")

    def test_unknownOption(self):
        """
        Options other than C{interface} are refused.
        """
        self.assertBad("udp:9000:backlog=5", "unknown option 'backlog'")

    def test_unescapedIPv6(self):
        """
        An IPv6 interface with unescaped colons is refused: the colons end
        the value, which is then empty.
        """
        self.assertBad("udp:9000:interface=::1", "interface '' is not an IP address")
        self.assertBad("udp:9000:interface=::", "interface '' is not an IP address")

    def test_notAnIP(self):
        """
        An interface that is not an IP address is refused.
        """
        self.assertBad("udp:9000:interface=localhost", "'localhost' is not an IP address")

    def test_wrongKind(self):
        """
        Anything but C{udp:PORT} is refused.
        """
        for description in ["tcp:9000", "udp", "9000", ""]:
            self.assertBad(description, "expected udp:PORT")


class ParseStreamDescriptionTests(SynchronousTestCase):
    """
    L{parseStreamDescription}, with a L{MemoryReactorClock}.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()

    def test_tcp(self):
        """
        C{tcp:} descriptions are parsed as by C{serverFromString}.
        """
        endpoint = parseStreamDescription(self.reactor, "tcp:7007:interface=127.0.0.1")
        self.assertIsInstance(endpoint, TCP4ServerEndpoint)
        endpoint.listen(Factory())
        [(port, _, _, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (7007, "127.0.0.1"))

    def test_haproxy(self):
        """
        C{haproxy:} wraps the rest of the description in a
        L{ProxyHeaderEndpoint} whose factory waits for the header, timed by
        the reactor.
        """
        endpoint = parseStreamDescription(
            self.reactor, "haproxy:tcp:7007:interface=127.0.0.1"
        )
        self.assertIsInstance(endpoint, ProxyHeaderEndpoint)
        self.assertIsInstance(endpoint.wrapped, TCP4ServerEndpoint)
        self.assertIs(endpoint.clock, self.reactor)
        factory = Factory()
        endpoint.listen(factory)
        [(port, listening, _, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (7007, "127.0.0.1"))
        self.assertIsInstance(listening, ProxyHeaderFactory)
        self.assertIs(listening.wrappedFactory, factory)
        self.assertIs(listening.clock, self.reactor)

    def test_unknownKind(self):
        """
        Unknown endpoint types raise, also behind C{haproxy:}.
        """
        self.assertRaises(ValueError, parseStreamDescription, self.reactor, "bogus:1")
        self.assertRaises(
            ValueError, parseStreamDescription, self.reactor, "haproxy:bogus:1"
        )


class TLSDescriptionTests(SynchronousTestCase):
    """
    C{ssl:} and C{tls:} descriptions, which L{parseStreamDescription}
    makes into our own TLS listeners, with a L{MemoryReactorClock}.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.directory = temporaryDirectory(self)
        self.pem, _ = writeCertificate(self.directory)
        self.certificates = self.directory / "certificates"
        self.certificates.mkdir()
        writeCertificate(self.certificates)

    def parse(self, description: str, **kwargs):
        """
        @return: the endpoint of C{description}.
        """
        return parseStreamDescription(self.reactor, description, **kwargs)

    def listenSSL(self, description: str, **kwargs):
        """
        Listen on an C{ssl:} C{description}.

        @return: what the reactor was asked to listen with: port, factory,
            context factory, backlog and interface.
        """
        endpoint = self.parse(description, **kwargs)
        self.assertIsInstance(endpoint, SSL4ServerEndpoint)
        endpoint.listen(Factory.forProtocol(Protocol))
        [listened] = self.reactor.sslServers
        return listened

    def listenTLS(self, description: str, **kwargs):
        """
        Listen on a C{tls:} C{description}.

        @return: what the reactor was asked to listen with over TCP: port,
            factory, backlog and interface.
        """
        self.parse(description, **kwargs).listen(Factory.forProtocol(Protocol))
        [listened] = self.reactor.tcpServers
        return listened

    def connection(self, factory):
        """
        @return: the TLS connection of a new connection to C{factory}.
        """
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        protocol.makeConnection(StringTransport())
        return protocol.getHandle()

    def assertBad(self, description: str, fragment: str) -> None:
        """
        Check that C{description} is a one-line L{ValueError} saying
        C{fragment}.
        """
        error = self.assertRaises(ValueError, self.parse, description)
        self.assertIn(fragment, str(error))
        self.assertNotIn("\n", str(error))

    def test_ssl(self):
        """
        C{ssl:} listens where told, with the policy of every TLS listener.
        """
        port, _, options, backlog, interface = self.listenSSL(
            f"ssl:7443:privateKey={self.pem}:interface=127.0.0.1:backlog=7"
        )
        self.assertEqual((port, backlog, interface), (7443, 7, "127.0.0.1"))
        assertPolicyCiphers(self, options.getContext())
        self.assertEqual(options.getContext().get_verify_mode(), SSL.VERIFY_NONE)

    def test_sslDefaults(self):
        """
        C{port=} may be named; the interface is all IPv4 addresses and the
        backlog 50, as for Twisted's C{ssl:}.
        """
        port, _, _, backlog, interface = self.listenSSL(f"ssl:port=7443:privateKey={self.pem}")
        self.assertEqual((port, backlog, interface), (7443, 50, ""))

    def test_sslFiles(self):
        """
        C{certKey} names the certificate file apart from the key, and
        C{extraCertChain} a file of intermediates sent after it.
        """
        created = createSelfSignedCertificate(
            self.directory / "k.pem", self.directory / "c.pem", ["localhost"]
        )
        _, intermediate = certify(["intermediate.test"])
        (self.directory / "chain.pem").write_bytes(pem(intermediate))
        _, _, options, _, _ = self.listenSSL(
            f"ssl:7443:privateKey={created.keyPath}:certKey={created.certificatePath}"
            f":extraCertChain={self.directory / 'chain.pem'}"
        )
        self.assertEqual(options.certificate, created.certificate)
        self.assertEqual(options.extraCertChain, [intermediate])

    def test_sslClientCertificates(self):
        """
        With C{requestClientCertificate}, C{ssl:} listeners ask clients
        for a certificate.
        """
        _, _, options, _, _ = self.listenSSL(
            f"ssl:7443:privateKey={self.pem}", requestClientCertificate=True
        )
        self.assertEqual(
            options.getContext().get_verify_mode(), SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE
        )

    def test_sslBad(self):
        """
        Options that would weaken the policy, unknown or repeated options,
        a missing or bad port and an interface that is not an IP address
        are refused, each in one line.
        """
        key = f"privateKey={self.pem}"
        for description, fragment in [
            (f"ssl:7443:{key}:sslmethod=TLSv1_2_METHOD", "sslmethod= is not supported"),
            (f"ssl:7443:{key}:dhParameters=dh.pem", "dhParameters= is not supported"),
            (f"ssl:7443:{key}:bogus=1", "unknown ssl: option 'bogus=1'"),
            (f"ssl:{key}", "port=N is needed"),
            (f"ssl:x:{key}", "bad port= or backlog=: 'x' is not a port number"),
            (f"ssl:7443:{key}:port=7444", "port= given twice"),
            (f"ssl:7443:{key}:interface=localhost", "'localhost' is not an IP address"),
            ("ssl:7443:privateKey=/nonexistent.pem", "cannot read TLS key file /nonexistent.pem"),
        ]:
            self.assertBad(description, fragment)

    def test_haproxySSL(self):
        """
        C{haproxy-ssl:} takes the options of C{ssl:}, and the same TLS
        policy.
        """
        self.parse(f"haproxy-ssl:7443:privateKey={self.pem}:interface=127.0.0.1").listen(
            Factory.forProtocol(Protocol)
        )
        [(port, _, _, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (7443, "127.0.0.1"))
        self.assertBad(f"haproxy-ssl:7443:privateKey={self.pem}:sslmethod=x", "not supported")

    def test_tls(self):
        """
        C{tls:DIRECTORY} listens over TCP where told, with the policy of
        every TLS listener, and serves a certificate replaced in the
        directory once C{recheck} seconds have passed, by the reactor's
        clock.
        """
        port, factory, backlog, interface = self.listenTLS(
            f"tls:{self.certificates}:port=6697:interface=127.0.0.1:backlog=7:recheck=5"
        )
        self.assertEqual((port, backlog, interface), (6697, 7, "127.0.0.1"))
        connection = self.connection(factory)
        assertPolicyCiphers(self, connection.get_context())
        self.assertEqual(connection.get_context().get_verify_mode(), SSL.VERIFY_NONE)
        before = connection.get_certificate(as_cryptography=True)
        writeCertificate(self.certificates)
        self.reactor.advance(4.9)
        self.assertEqual(self.connection(factory).get_certificate(as_cryptography=True), before)
        self.reactor.advance(0.1)
        self.assertNotEqual(
            self.connection(factory).get_certificate(as_cryptography=True), before
        )

    def test_tlsDefaults(self):
        """
        As for Twisted's C{tls:}, the port may be given without its name,
        the interface is C{::} (IPv6 and IPv4) and the backlog 50.
        """
        port, _, backlog, interface = self.listenTLS(f"tls:{self.certificates}:6697")
        self.assertEqual((port, backlog, interface), (6697, 50, "::"))

    def test_tlsClientCertificates(self):
        """
        With C{requestClientCertificate}, C{tls:} listeners ask clients for
        a certificate.
        """
        _, factory, _, _ = self.listenTLS(
            f"tls:{self.certificates}:port=6697", requestClientCertificate=True
        )
        self.assertEqual(
            self.connection(factory).get_context().get_verify_mode(),
            SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE,
        )

    def test_haproxyTLS(self):
        """
        C{haproxy:tls:...} reads a PROXY header inside TLS, as
        C{haproxy:ssl:...} does.
        """
        endpoint = self.parse(f"haproxy:tls:{self.certificates}:port=6697")
        self.assertIsInstance(endpoint, ProxyHeaderEndpoint)
        endpoint.listen(Factory.forProtocol(Protocol))
        [(port, factory, _, _)] = self.reactor.tcpServers
        self.assertEqual(port, 6697)
        self.assertIsInstance(factory.wrappedFactory, ProxyHeaderFactory)

    def test_tlsBad(self):
        """
        A missing directory, one without a usable certificate, a missing
        port, a bad C{recheck} and unknown options are refused, each in
        one line.
        """
        empty = self.directory / "empty"
        empty.mkdir()
        for description, fragment in [
            ("tls:/nonexistent:port=1", "directory /nonexistent: no such directory"),
            (f"tls:{empty}:port=1", f"TLS certificate directory {empty}: no usable certificate"),
            (f"tls:{self.certificates}", "port=N is needed"),
            (f"tls:{self.certificates}:port=1:recheck=-1", "bad recheck=: '-1' is not"),
            (f"tls:{self.certificates}:port=1:privateKey=x", "unknown tls: option 'privateKey=x'"),
            ("tls::port=1", "expected tls:DIRECTORY:port=N"),
        ]:
            self.assertBad(description, fragment)


class ListenOptionsTests(SynchronousTestCase):
    """
    L{ListenOptions}, L{DatagramListenOptions} and L{ConnectionLimitOptions}
    as the info services use them.
    """

    def parse(self, optionsClass, *args: str):
        """
        @return: an C{optionsClass} that parsed C{args}, with descriptions
            parsed for a L{MemoryReactorClock}.
        """
        options = optionsClass()
        options.reactor = MemoryReactorClock()
        options.parseOptions(list(args))
        return options

    def assertUsageError(self, optionsClass, *args: str) -> str:
        """
        Assert that C{args} are refused with a one-line L{usage.UsageError}.

        @return: its message.
        """
        options = optionsClass()
        options.reactor = MemoryReactorClock()
        error = self.assertRaises(usage.UsageError, options.parseOptions, list(args))
        self.assertNotIn("\n", str(error))
        return str(error)

    def test_streamDefault(self):
        """
        Without C{--listen} or C{--port}, the default description is used.
        """
        options = self.parse(TCPInfoOptions)
        self.assertEqual(options["listen"], ["tcp:7007:interface=127.0.0.1"])
        [endpoint] = options["endpoints"]
        self.assertIsInstance(endpoint, TCP4ServerEndpoint)

    def test_streamListen(self):
        """
        Each C{--listen} is kept, in order, and parsed into an endpoint.
        """
        options = self.parse(
            TCPInfoOptions, "--listen", "tcp:1", "--listen", "haproxy:tcp:2"
        )
        self.assertEqual(options["listen"], ["tcp:1", "haproxy:tcp:2"])
        self.assertEqual(
            [type(e) for e in options["endpoints"]],
            [TCP4ServerEndpoint, ProxyHeaderEndpoint],
        )

    def test_port(self):
        """
        C{--port N} stands for the service's template with N.
        """
        options = self.parse(TCPInfoOptions, "--port", "9000")
        self.assertEqual(options["listen"], ["tcp:9000:interface=127.0.0.1"])
        options = self.parse(UDPInfoOptions, "--port", "9000", "--listen", "udp:9001")
        self.assertEqual(options["listen"], ["udp:9000:interface=127.0.0.1", "udp:9001"])
        self.assertEqual(
            options["endpoints"],
            [DatagramAddress(9000, "127.0.0.1"), DatagramAddress(9001, "")],
        )

    def test_badPort(self):
        """
        C{--port} takes a port number 0-65535, and the error names it.
        """
        for port in ["x", "70000", "-1"]:
            message = self.assertUsageError(TCPInfoOptions, "--port", port)
            self.assertEqual(message, f"--port {port!r}: expected a port number 0-65535")

    def test_badListen(self):
        """
        A bad C{--listen} is refused while parsing options, with a one-line
        message naming the description.
        """
        message = self.assertUsageError(TCPInfoOptions, "--listen", "bogus:1")
        self.assertEqual(message, "--listen 'bogus:1': Unknown endpoint type: 'bogus'")
        message = self.assertUsageError(UDPInfoOptions, "--listen", "udp:x")
        self.assertEqual(message, "--listen 'udp:x': bad port 'x': expected 0-65535")

    def test_unescapedColons(self):
        """
        An IPv6 interface with unescaped colons gets a hint.
        """
        message = self.assertUsageError(
            TCPInfoOptions, "--listen", "tcp:7007:interface=::1"
        )
        self.assertIn("--listen 'tcp:7007:interface=::1': ", message)
        self.assertIn(r"(escape colons inside values: interface=\:\:1)", message)

    def test_missingKey(self):
        """
        A TLS description whose key file is missing is refused while parsing
        options, naming the description and the file.
        """
        description = "ssl:0:privateKey=/nonexistent.pem"
        message = self.assertUsageError(TCPInfoOptions, "--listen", description)
        self.assertEqual(
            message,
            f"--listen {description!r}: cannot read TLS key file /nonexistent.pem:"
            " No such file or directory",
        )

    def test_badTLSDirectory(self):
        """
        A C{tls:} description whose directory is missing is refused while
        parsing options, naming the description and the directory.
        """
        description = "tls:/nonexistent:port=6697"
        message = self.assertUsageError(TCPInfoOptions, "--listen", description)
        self.assertEqual(
            message,
            f"--listen {description!r}: TLS certificate directory /nonexistent: no such directory",
        )

    def test_requestClientCertificate(self):
        """
        Options whose C{requestClientCertificate} is true make TLS
        listeners that ask clients for a certificate.
        """

        class Requesting(TCPInfoOptions):
            requestClientCertificate = True

        pemPath, _ = writeCertificate(temporaryDirectory(self))
        options = self.parse(Requesting, "--listen", f"ssl:0:privateKey={pemPath}")
        [endpoint] = options["endpoints"]
        endpoint.listen(Factory.forProtocol(Protocol))
        [(_, _, contextFactory, _, _)] = options.reactor.sslServers
        self.assertEqual(
            contextFactory.getContext().get_verify_mode(),
            SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE,
        )

    def test_datagramDefault(self):
        """
        Without C{--listen} or C{--port}, a UDP service uses its default.
        """
        options = self.parse(UDPInfoOptions)
        self.assertEqual(options["listen"], ["udp:3478:interface=127.0.0.1"])
        self.assertEqual(options["endpoints"], [DatagramAddress(3478, "127.0.0.1")])

    def test_datagramListen(self):
        """
        UDP C{--listen} descriptions are parsed into L{DatagramAddress}es.
        """
        options = self.parse(UDPInfoOptions, "--listen", r"udp:9000:interface=\:\:1")
        self.assertEqual(options["endpoints"], [DatagramAddress(9000, "::1")])

    def test_connectionLimits(self):
        """
        The connection limit options become L{ConnectionLimits}, with its
        defaults for options not given.
        """
        self.assertEqual(self.parse(TCPInfoOptions).connectionLimits(), ConnectionLimits())
        options = self.parse(
            TCPInfoOptions,
            "--max-connections", "5",
            "--max-per-peer", "0",
            "--idle-timeout", "2.5",
        )
        self.assertEqual(
            options.connectionLimits(),
            ConnectionLimits(maxConnections=5, maxPerPeer=0, idleTimeout=2.5),
        )

    def test_negativeLimits(self):
        """
        Negative limits and a non-finite timeout are refused.
        """
        for args in [
            ["--max-connections", "-1"],
            ["--max-per-peer", "-5"],
            ["--idle-timeout", "-1"],
            ["--idle-timeout", "inf"],
        ]:
            self.assertUsageError(TCPInfoOptions, *args)

    def test_usage(self):
        """
        The usage text tells the default and what C{--port} means.
        """
        text = TCPInfoOptions().getUsage()
        self.assertIn("Without --listen or --port: tcp:7007:interface=127.0.0.1", text)
        self.assertIn("--port N means: tcp:N:interface=127.0.0.1", text)


class CoerceTests(SynchronousTestCase):
    """
    The option value coercers.
    """

    def test_positiveInt(self):
        """
        L{positiveInt} takes integers from 1.
        """
        self.assertEqual(positiveInt("1"), 1)
        self.assertRaises(ValueError, positiveInt, "0")

    def test_nonNegativeInt(self):
        """
        L{nonNegativeInt} takes integers from 0.
        """
        self.assertEqual(nonNegativeInt("0"), 0)
        self.assertRaises(ValueError, nonNegativeInt, "-1")

    def test_nonNegativeFloat(self):
        """
        L{nonNegativeFloat} takes finite numbers from 0.
        """
        self.assertEqual(nonNegativeFloat("0.5"), 0.5)
        for value in ["-0.1", "inf", "nan"]:
            self.assertRaises(ValueError, nonNegativeFloat, value)

    def test_portNumber(self):
        """
        L{portNumber} takes 0-65535.
        """
        self.assertEqual(portNumber("65535"), 65535)
        self.assertRaises(ValueError, portNumber, "65536")
        self.assertRaises(ValueError, portNumber, "-1")


class ErrorTextTests(SynchronousTestCase):
    """
    L{errorText}.
    """

    def test_openSSLError(self):
        """
        A key or certificate file OpenSSL cannot use is named as such, with
        OpenSSL's reasons, instead of a list of tuples.
        """
        from OpenSSL.crypto import Error

        error = Error([("DECODER routines", "", "unsupported")])
        self.assertEqual(errorText(error), "not a usable key or certificate (unsupported)")

    def test_stunRateNotNegative(self):
        """
        udp-info refuses a negative STUN rate or burst while parsing.
        """
        for option in ("--stun-rate", "--stun-burst"):
            self.assertRaises(usage.UsageError, UDPInfoOptions().parseOptions, [option, "-5"])

    def test_cannotListen(self):
        """
        L{CannotListenError} is reduced to the socket error's text.
        """
        error = CannotListenError("127.0.0.1", 80, OSError(98, "Address already in use"))
        self.assertEqual(errorText(error), "Address already in use")
        self.assertEqual(errorText(CannotListenError(None, 80, "odd")), "odd")

    def test_osError(self):
        """
        L{OSError} is shown by its text and file name, without the errno
        tuple.
        """
        self.assertEqual(
            errorText(FileNotFoundError(2, "No such file or directory", "/x.pem")),
            "No such file or directory: /x.pem",
        )
        self.assertEqual(errorText(OSError(13, "Permission denied")), "Permission denied")
        self.assertEqual(errorText(OSError("plain")), "plain")

    def test_multipleValues(self):
        """
        The L{TypeError} of unescaped colons gets a hint.
        """
        self.assertEqual(
            errorText(TypeError("_parseTCP() got multiple values for argument 'interface'")),
            "_parseTCP() got multiple values for argument 'interface'"
            r" (escape colons inside values: interface=\:\:1)",
        )
        self.assertEqual(errorText(TypeError("other")), "other")

    def test_oneLine(self):
        """
        Other errors are shown on one line, or by their type if empty.
        """
        self.assertEqual(errorText(ValueError("a\n  b")), "a b")
        self.assertEqual(errorText(ValueError()), "ValueError")


class DescribeAddressTests(SynchronousTestCase):
    """
    L{describeAddress}.
    """

    def test_addresses(self):
        """
        Addresses are described by type and C{host:port}, or UNIX path.
        """
        self.assertEqual(
            describeAddress(IPv4Address("TCP", "127.0.0.1", 7007)), "tcp 127.0.0.1:7007"
        )
        self.assertEqual(describeAddress(IPv6Address("UDP", "::1", 9000)), "udp [::1]:9000")
        self.assertEqual(describeAddress(UNIXAddress(b"/run/x.sock")), "unix /run/x.sock")
        self.assertEqual(describeAddress("other"), "other")


class FailingEndpoint:
    """
    An endpoint that fails to listen with C{error}.
    """

    def __init__(self, error: Exception) -> None:
        self.error = error

    def listen(self, factory):
        return fail(self.error)


def listeningEvents(events) -> list[str]:
    """
    @return: the "listening on" lines among C{events}.
    """
    return [
        formatEvent(e) for e in events if e.get("log_format", "").startswith("listening")
    ]


class StreamListenerTests(TestCase):
    """
    L{StreamListener} on real loopback sockets.
    """

    def takenPort(self) -> int:
        """
        @return: a TCP port on 127.0.0.1 that a plain socket listens on.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        return holder.getsockname()[1]

    def test_listening(self):
        """
        Asked for port 0, a listener logs and exposes the real port, listens
        once however it is started, and stops listening when stopped.
        """
        description = "tcp:0:interface=127.0.0.1"
        listener = StreamListener(
            description,
            serverFromString(reactor, description),
            Factory.forProtocol(Protocol),
            reactor,
        )
        with capturedLogs() as events:
            listener.privilegedStartService()
            listener.startService()
        self.addCleanup(lambda: listener.port and listener.port.stopListening())
        port = listener.port.getHost().port
        self.assertNotEqual(port, 0)
        self.assertEqual(
            listeningEvents(events),
            [f"listening on tcp 127.0.0.1:{port} ({description})"],
        )
        self.assertEqual(
            listeningAddresses([listener, CallOnStop(lambda: None)]),
            [IPv4Address("TCP", "127.0.0.1", port)],
        )
        d = listener.stopService()
        self.assertIsNone(listener.port)

        def stopped(_):
            self.assertEqual(listeningAddresses([listener]), [])
            # The port is free again.
            probe = socket.socket()
            self.addCleanup(probe.close)
            probe.bind(("127.0.0.1", port))

        return d.addCallback(stopped)

    def test_addressInUse(self):
        """
        A port already taken stops startup with a one-line message naming
        the description and the reason.
        """
        description = f"tcp:{self.takenPort()}:interface=127.0.0.1"
        listener = StreamListener(
            description, serverFromString(reactor, description), Factory(), reactor
        )
        error = self.assertRaises(SystemExit, listener.privilegedStartService)
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertEqual(
            message,
            f"netservices: cannot listen on {description}: Address already in use",
        )
        self.assertIsNone(listener.port)

    def test_otherFailure(self):
        """
        Other listening errors stop startup the same way.
        """
        listener = StreamListener(
            "unix:/root/x", FailingEndpoint(OSError(13, "Permission denied")), Factory(), reactor
        )
        error = self.assertRaises(SystemExit, listener.startService)
        self.assertEqual(
            str(error), "netservices: cannot listen on unix:/root/x: Permission denied"
        )


class LateEndpoint:
    """
    An endpoint whose listening finishes only when the test says so.
    """

    def __init__(self) -> None:
        self.waiting: list[Deferred] = []

    def listen(self, factory):
        self.waiting.append(Deferred())
        return self.waiting[-1]


class LateListenerTests(SynchronousTestCase):
    """
    L{StreamListener} with endpoints that bind after startup.
    """

    def test_lateSuccess(self):
        """
        A port bound later is recorded and logged then, and stopped with
        the service.
        """
        endpoint = LateEndpoint()
        listener = StreamListener("late:1", endpoint, Factory(), Clock())
        listener.startService()
        listener.privilegedStartService()
        self.assertEqual(len(endpoint.waiting), 1)
        self.assertIsNone(listener.port)
        port = FakePort()
        with capturedLogs() as events:
            endpoint.waiting[0].callback(port)
        self.assertIs(listener.port, port)
        self.assertEqual(listeningEvents(events), ["listening on tcp 127.0.0.1:4321 (late:1)"])
        listener.stopService()
        self.assertTrue(port.stopped)

    def test_lateFailure(self):
        """
        A failure after startup is logged as one critical line and stops the
        reactor: there is no command line left to exit from.
        """
        endpoint = LateEndpoint()
        reactor = MemoryReactorClock()
        reactor.running = True
        listener = StreamListener("late:1", endpoint, Factory(), reactor)
        listener.startService()
        with capturedLogs() as events:
            endpoint.waiting[0].errback(OSError(13, "Permission denied"))
        [event] = [e for e in events if e["log_level"] == LogLevel.critical]
        self.assertEqual(
            formatEvent(event), "netservices: cannot listen on late:1: Permission denied"
        )
        self.assertTrue(reactor.hasStopped)

    def test_stopWhileWaiting(self):
        """
        Stopping the service before the port is bound cancels the attempt
        quietly.
        """
        endpoint = LateEndpoint()
        listener = StreamListener("late:1", endpoint, Factory(), Clock())
        listener.startService()
        with capturedLogs() as events:
            listener.stopService()
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.warn], [])
        self.assertIsNone(listener.port)


class FakePort:
    """
    A listening port that records being stopped.
    """

    stopped = False

    def getHost(self):
        return IPv4Address("TCP", "127.0.0.1", 4321)

    def stopListening(self):
        self.stopped = True


class Silent(DatagramProtocol):
    """
    A datagram protocol that ignores everything.
    """


class DatagramListenerTests(TestCase):
    """
    L{DatagramListener} on real loopback sockets.
    """

    def test_listening(self):
        """
        Asked for port 0, a listener logs the real port, passes it to
        C{onListening}, listens once however it is started, and stops
        listening when stopped.
        """
        description = "udp:0:interface=127.0.0.1"
        bound: list[int] = []
        listener = DatagramListener(
            description, DatagramAddress(0, "127.0.0.1"), Silent, reactor, bound.append
        )
        self.assertIsInstance(listener.protocol, Silent)
        with capturedLogs() as events:
            listener.privilegedStartService()
            listener.startService()
        self.addCleanup(lambda: listener.port and listener.port.stopListening())
        port = listener.port.getHost().port
        self.assertNotEqual(port, 0)
        self.assertEqual(bound, [port])
        self.assertEqual(
            listeningEvents(events),
            [f"listening on udp 127.0.0.1:{port} ({description})"],
        )
        self.assertEqual(
            listeningAddresses([listener]), [IPv4Address("UDP", "127.0.0.1", port)]
        )
        d = listener.stopService()
        self.assertIsNone(listener.port)
        return d

    def test_addressInUse(self):
        """
        A UDP port already taken stops startup with a one-line message
        naming the description and the reason.
        """
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        # Twisted does not close the socket whose bind failed; close it.
        created: list[socket.socket] = []
        createSocket = InfoDatagramPort.createInternetSocket

        def recordingCreate(port):
            created.append(createSocket(port))
            return created[-1]

        self.patch(InfoDatagramPort, "createInternetSocket", recordingCreate)
        self.addCleanup(lambda: [s.close() for s in created])
        description = f"udp:{port}:interface=127.0.0.1"
        bound: list[int] = []
        listener = DatagramListener(
            description, DatagramAddress(port, "127.0.0.1"), Silent, reactor, bound.append
        )
        error = self.assertRaises(SystemExit, listener.privilegedStartService)
        self.assertEqual(
            str(error),
            f"netservices: cannot listen on {description}: Address already in use",
        )
        self.assertEqual(bound, [])
        self.assertIsNone(listener.port)
        self.assertEqual(len(created), 1)


class CallOnStopTests(SynchronousTestCase):
    """
    L{CallOnStop}.
    """

    def test_calledOnStop(self):
        """
        The function is called when the service stops, not before.
        """
        calls: list[None] = []
        top = service.MultiService()
        CallOnStop(lambda: calls.append(None)).setServiceParent(top)
        top.startService()
        self.assertEqual(calls, [])
        top.stopService()
        self.assertEqual(calls, [None])
