"""
Integration tests of tcp-info and udp-info: the real C{twistd} serving
real loopback sockets, asked by the real C{netservices} client, plain
sockets, an HTTP client, PROXY headers, TLS and the Debian STUN client.
"""

from __future__ import annotations

import ipaddress
import json
import os
import struct

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers

from netservices.testing import (
    NO_IPV6,
    TwistdTestCase,
    writeCertificate,
    oneLineFailure,
    CLEAN_STOP,
    StreamAnswer,
    eventText,
    fetchFrom,
    fetchStream,
    isError,
    openDatagramClient,
    runCommand,
    runProcess,
)

#: The fields of an answer and of the log event of each client, in the
#: order of the text answer.
FIELDS = ("transport", "ip", "port", "local_ip", "local_port", "tls", "proxy")

#: Loopback addresses of both families, and how the client takes them.
FAMILIES = [("127.0.0.1", "127.0.0.1:{port}"), ("::1", "[::1]:{port}")]

#: A udp-info query for text, padded so that the answer fits.
TEXT_QUERY = b"text\n".ljust(256, b" ")

#: A udp-info query for JSON, shorter than any answer.
SHORT_JSON_QUERY = b"json\n"

STUN_CLIENT = "/usr/bin/stun"

PROXY_V1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 7007\r\n"


def proxyV2(source: str, sourcePort: int, destination: str, destinationPort: int) -> bytes:
    """
    @return: a binary PROXY protocol v2 header for a TCP connection over
        IPv6 from C{source} to C{destination}.
    """
    addresses = (
        ipaddress.IPv6Address(source).packed
        + ipaddress.IPv6Address(destination).packed
        + struct.pack("!HH", sourcePort, destinationPort)
    )
    # Signature; version 2, command PROXY; AF_INET6, STREAM; length.
    return (
        b"\r\n\r\n\x00\r\nQUIT\n"
        + bytes([0x21, 0x21])
        + struct.pack("!H", len(addresses))
        + addresses
    )


def sighting(
    transport: str,
    ip: str,
    port: int,
    localIP: str,
    localPort: int,
    tls: bool = False,
    proxy: bool = False,
) -> dict:
    """
    @return: an answer (or log event) as a dict of its wire fields.
    """
    return dict(zip(FIELDS, (transport, ip, port, localIP, localPort, tls, proxy)))


def textAnswer(fields: dict) -> str:
    """
    @return: the text answer for C{fields}, as tcp-info sends it.
    """
    shown = {
        key: ("yes" if value else "no") if isinstance(value, bool) else value
        for key, value in fields.items()
    }
    return " ".join(f"{k}={shown[k]}" for k in FIELDS) + "\n"


def parseText(text: str) -> dict:
    """
    @return: the fields of a text answer, with C{port}, C{local_port},
        C{tls} and C{proxy} in their JSON types.
    """
    fields = dict(word.split("=", 1) for word in text.split())
    for key in ("port", "local_port"):
        fields[key] = int(fields[key])
    for key in ("tls", "proxy"):
        fields[key] = {"yes": True, "no": False}[fields[key]]
    return fields


def sightingLogged(**fields):
    """
    @return: a predicate matching the log event of a client sighting whose
        fields include C{fields}.
    """

    def matches(event: dict) -> bool:
        return all(key in event for key in FIELDS) and all(
            event[key] == value for key, value in fields.items()
        )

    return matches


def loggedFields(event: dict) -> dict:
    """
    @return: the sighting fields of a log event.
    """
    return {key: event[key] for key in FIELDS}


class _BodyCollector(Protocol):
    """
    Collects a response body (L{twisted.web.client.readBody} warns about
    the transports of pooled connections).
    """

    def __init__(self, done: Deferred) -> None:
        self.done = done
        self.body = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.body += data

    def connectionLost(self, reason) -> None:
        if reason.check(ResponseDone):
            self.done.callback(bytes(self.body))
        else:
            self.done.errback(reason)


def bodyOf(response) -> Deferred:
    """
    @return: a L{Deferred} firing with the whole body of C{response}.
    """
    done: Deferred = Deferred()
    response.deliverBody(_BodyCollector(done))
    return done


def escapeDescription(path: str) -> str:
    """
    @return: C{path} escaped for an endpoint description.
    """
    return path.replace("\\", "\\\\").replace(":", "\\:")


class ServerTestCase(TwistdTestCase):
    """
    Starts servers for tests, and stops them (by their own PID) after.
    """

    def assertOneLineFailure(self, result, *mentions: str) -> str:
        """
        Check that a command failed with one line on stderr, nothing on
        stdout and no traceback.

        @return: the line.
        """
        return oneLineFailure(self, result, *mentions)

    def ask(self, args: list[str]) -> Deferred:
        """
        Run C{netservices ARGS --json} and check that it succeeds.

        @return: a L{Deferred} firing with the answer.
        """

        def check(result) -> dict:
            out, err, code = result
            self.assertEqual((code, err), (0, b""), out)
            return json.loads(out)

        return runCommand(reactor, [*args, "--json"]).addCallback(check)


class TCPInfoTests(ServerTestCase):
    """
    tcp-info over IPv4 and IPv6, and over HTTP.
    """

    skip = NO_IPV6

    async def setUp(self) -> None:
        self.server = await self.startServer(
            [
                "tcp-info",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--listen",
                "tcp6:0:interface=\\:\\:1",
                "--http-listen",
                "tcp:0:interface=127.0.0.1",
            ],
            3,
        )
        self.tcp4, self.tcp6, self.http = self.server.listening
        self.ports = {"127.0.0.1": self.tcp4.port, "::1": self.tcp6.port}

    def test_listeningEvents(self) -> None:
        """
        The server logs each listener with its bound address and its
        C{--listen} description, in the order given.
        """
        self.assertEqual(
            [(a.transport, a.host, a.description) for a in self.server.listening],
            [
                ("tcp", "127.0.0.1", "tcp:0:interface=127.0.0.1"),
                ("tcp", "::1", "tcp6:0:interface=\\:\\:1"),
                ("tcp", "127.0.0.1", "tcp:0:interface=127.0.0.1"),
            ],
        )
        self.assertEqual(len(set(self.server.addresses)), 3)
        self.assertNotIn(0, [port for _, port in self.server.addresses])

    async def test_client(self) -> None:
        """
        C{netservices info tcp HOST:PORT --json} reports the loopback address
        of its family and the server's port, and the server logs the same
        sighting.
        """
        answers = await gatherResults(
            [
                self.ask(["info", "tcp", template.format(port=self.ports[ip])])
                for ip, template in FAMILIES
            ],
            consumeErrors=True,
        )
        for (ip, _), answer in zip(FAMILIES, answers):
            expected = sighting("tcp", ip, answer["port"], ip, self.ports[ip])
            self.assertEqual(answer, expected)
            self.assertIsInstance(answer["port"], int)
            self.assertNotIn(answer["port"], (0, self.ports[ip]))
            event = await self.server.waitForEvent(
                sightingLogged(ip=ip, port=answer["port"])
            )
            self.assertEqual(loggedFields(event), expected)

    async def test_plainSocket(self) -> None:
        """
        A plain TCP client that sends nothing gets the one-line text answer
        with its own address and port, and the connection is closed; the
        server logs the sighting as a structured event.
        """
        for ip, _ in FAMILIES:
            answer = await fetchStream(reactor, ip, self.ports[ip])
            self.assertEqual(answer.host, ip)
            expected = sighting("tcp", ip, answer.port, ip, self.ports[ip])
            self.assertEqual(answer.data.decode(), textAnswer(expected))
            event = await self.server.waitForEvent(sightingLogged(ip=ip, port=answer.port))
            self.assertEqual(loggedFields(event), expected)
            self.assertEqual(event["log_namespace"], "netservices.tcp-info")

    async def test_http(self) -> None:
        """
        C{GET /} over C{--http-listen} answers with the text answer, with
        transport C{http}; with C{Accept: application/json}, with JSON.
        """
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        agent = Agent(reactor, pool=pool)
        url = f"http://127.0.0.1:{self.http.port}/".encode("ascii")

        response = await agent.request(b"GET", url)
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"]
        )
        text = (await bodyOf(response)).decode()
        fields = parseText(text)
        expected = sighting("http", "127.0.0.1", fields["port"], "127.0.0.1", self.http.port)
        self.assertEqual(text, textAnswer(expected))

        response = await agent.request(
            b"GET", url, Headers({b"accept": [b"application/json"]})
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"application/json"]
        )
        answer = json.loads(await bodyOf(response))
        self.assertEqual(
            answer,
            sighting("http", "127.0.0.1", answer["port"], "127.0.0.1", self.http.port),
        )
        event = await self.server.waitForEvent(
            sightingLogged(transport="http", port=answer["port"])
        )
        self.assertEqual(loggedFields(event), answer)


class TCPInfoJSONTests(ServerTestCase):
    """
    tcp-info with C{--format json}.
    """

    async def test_jsonAnswer(self) -> None:
        """
        With C{--format json}, a plain TCP client gets one line of JSON.
        """
        server = await self.startServer(
            ["tcp-info", "--format", "json", "--listen", "tcp:0:interface=127.0.0.1"], 1
        )
        (host, port), = server.addresses
        answer = await fetchStream(reactor, host, port)
        self.assertTrue(answer.data.endswith(b"\n"))
        self.assertEqual(answer.data.count(b"\n"), 1)
        self.assertEqual(
            json.loads(answer.data),
            sighting("tcp", "127.0.0.1", answer.port, "127.0.0.1", port),
        )


class TCPInfoUNIXTests(ServerTestCase):
    """
    tcp-info on UNIX sockets, which C{tcp-info --help} offers for
    C{--listen} (C{unix:/run/x.sock}) and C{--http-listen} alike.
    """

    async def setUp(self) -> None:
        directory = self.temporaryDirectory()
        self.streamPath = directory / "tcp-info.sock"
        self.httpPath = directory / "http.sock"
        self.server = await self.startServer(
            [
                "tcp-info",
                "--listen",
                f"unix:{self.streamPath}",
                "--http-listen",
                f"unix:{self.httpPath}",
            ],
            2,
        )
        self.assertEqual(
            [(a.transport, a.host) for a in self.server.listening],
            [("unix", str(self.streamPath)), ("unix", str(self.httpPath))],
        )

    async def test_unixListener(self) -> None:
        """
        On C{--listen unix:PATH}, a client's connection is closed by the
        server (with at most one line of answer), and the server logs no
        error.
        """
        endpoint = UNIXClientEndpoint(reactor, str(self.streamPath))
        try:
            answer = await fetchFrom(reactor, endpoint, timeout=5)
        except Exception as e:
            answer = e
        self.assertEqual([eventText(e) for e in self.server.eventsMatching(isError)], [])
        self.assertIsInstance(answer, StreamAnswer)
        self.assertLessEqual(answer.data.count(b"\n"), 1, answer.data)

    async def test_unixHTTPListener(self) -> None:
        """
        On C{--http-listen unix:PATH}, C{GET /} succeeds, and the server
        logs no error.
        """
        endpoint = UNIXClientEndpoint(reactor, str(self.httpPath))
        answer = await fetchFrom(reactor, endpoint, send=b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual([eventText(e) for e in self.server.eventsMatching(isError)], [])
        self.assertTrue(answer.data.startswith(b"HTTP/1.0 200 "), answer.data)


class UDPInfoTests(ServerTestCase):
    """
    udp-info over IPv4 and IPv6, with our clients, plain sockets and the
    Debian STUN client.
    """

    skip = NO_IPV6

    async def setUp(self) -> None:
        self.server = await self.startServer(
            [
                "udp-info",
                "--listen",
                "udp:0:interface=127.0.0.1",
                "--listen",
                "udp:0:interface=\\:\\:1",
            ],
            2,
        )
        self.assertEqual(
            [(a.transport, a.host) for a in self.server.listening],
            [("udp", "127.0.0.1"), ("udp", "::1")],
        )
        self.ports = {a.host: a.port for a in self.server.listening}

    async def openClient(self, ip: str):
        """
        @return: a L{netservices.testing.DatagramClient} on C{ip}, closed
            after the test.
        """
        client = openDatagramClient(reactor, ip)
        self.addCleanup(client.close)
        return client

    async def test_clients(self) -> None:
        """
        C{netservices info udp --json} and C{netservices info stun --json}
        report the loopback address of their family and (udp) the server's
        port; the server logs each sighting.
        """
        commands = [
            (mode, ip, ["info", mode, template.format(port=self.ports[ip])])
            for mode in ("udp", "stun")
            for ip, template in FAMILIES
        ]
        answers = await gatherResults(
            [self.ask(args) for _, _, args in commands], consumeErrors=True
        )
        for (mode, ip, _), answer in zip(commands, answers):
            # For STUN, local_ip and local_port are what the client asked.
            expected = sighting(mode, ip, answer["port"], ip, self.ports[ip])
            self.assertEqual(answer, expected, mode)
            self.assertNotIn(answer["port"], (0, self.ports[ip]))
            event = await self.server.waitForEvent(
                sightingLogged(transport=mode, ip=ip, port=answer["port"])
            )
            self.assertEqual(loggedFields(event), expected)

    async def test_plainSocket(self) -> None:
        """
        A plain UDP socket sending a padded text query gets the text answer
        with its own address and port.
        """
        for ip, _ in FAMILIES:
            client = await self.openClient(ip)
            client.send(TEXT_QUERY, (ip, self.ports[ip]))
            data, source = await client.nextDatagram()
            self.assertEqual(source, (ip, self.ports[ip]))
            expected = sighting("udp", ip, client.port, ip, self.ports[ip])
            self.assertEqual(data.decode(), textAnswer(expected))
            self.assertLessEqual(len(data), len(TEXT_QUERY))
            event = await self.server.waitForEvent(sightingLogged(ip=ip, port=client.port))
            self.assertEqual(loggedFields(event), expected)

    async def test_shortQueryNotAnswered(self) -> None:
        """
        A query shorter than its answer gets no answer at all: after a short
        JSON query and then a full text query, the first datagram back is
        the text answer.  The refusal is logged with reason
        C{request-shorter-than-answer}, and counted in the totals logged at
        shutdown.
        """
        for ip, _ in FAMILIES:
            client = await self.openClient(ip)
            client.send(SHORT_JSON_QUERY, (ip, self.ports[ip]))
            client.send(TEXT_QUERY, (ip, self.ports[ip]))
            data, _ = await client.nextDatagram()
            self.assertEqual(
                data.decode(),
                textAnswer(sighting("udp", ip, client.port, ip, self.ports[ip])),
            )
        # Refusals are logged at most once per reason per second: the first
        # one is, the totals count both.
        ip = FAMILIES[0][0]
        event = await self.server.waitForEvent(
            lambda e: e.get("reason") == "request-shorter-than-answer"
        )
        self.assertEqual(event["size"], len(SHORT_JSON_QUERY))
        self.assertIn(ip, event["peer"])
        self.assertEqual(await self.server.stop(), CLEAN_STOP)
        (totals,) = self.server.eventsMatching(
            lambda e: e.get("what") == "datagram" and "refusals" in e
        )
        self.assertEqual(totals["refusals"], {"request-shorter-than-answer": 2})

    async def test_debianStunClient(self) -> None:
        """
        The Debian C{stun} client (RFC 3489, no magic cookie) gets its
        mapped address from udp-info, which logs a STUN sighting.
        """
        if not os.access(STUN_CLIENT, os.X_OK):
            raise self.skipTest(f"{STUN_CLIENT} is not installed (Debian package stun-client)")
        port = self.ports["127.0.0.1"]
        # The client needs a source port; one the system just gave out and
        # took back is free (and above 1024, so the server answers it).
        client = await self.openClient("127.0.0.1")
        sourcePort = client.port
        await client.close()
        out, err, code = await runProcess(
            reactor,
            [STUN_CLIENT, f"127.0.0.1:{port}", "1", "-v", "-p", str(sourcePort)],
            timeout=10,
        )
        output = (out + err).decode("utf-8", "replace")
        self.assertEqual(code, 0, output)
        self.assertIn(f"MappedAddress = 127.0.0.1:{sourcePort}", output)
        event = await self.server.waitForEvent(sightingLogged(transport="stun"))
        self.assertEqual(
            loggedFields(event),
            sighting("stun", "127.0.0.1", sourcePort, "127.0.0.1", port),
        )


class ProxyAndTLSTests(ServerTestCase):
    """
    tcp-info behind a PROXY header, over TLS, and both (HAProxy's
    C{send-proxy} in front of TLS).
    """

    async def setUp(self) -> None:
        directory = self.temporaryDirectory()
        self.serverPEM, self.caPEM = writeCertificate(directory)
        key = escapeDescription(str(self.serverPEM))
        self.server = await self.startServer(
            [
                "tcp-info",
                "--listen",
                "haproxy:tcp:0:interface=127.0.0.1",
                "--listen",
                f"ssl:0:privateKey={key}:interface=127.0.0.1",
                "--listen",
                f"haproxy-ssl:0:privateKey={key}:interface=127.0.0.1",
            ],
            3,
        )
        self.proxy, self.tls, self.proxyTLS = (a.port for a in self.server.listening)

    async def test_proxyV1(self) -> None:
        """
        After a PROXY v1 header, the answer and the log event show the
        addresses of the header.
        """
        answer = await fetchStream(reactor, "127.0.0.1", self.proxy, send=PROXY_V1)
        expected = sighting("tcp", "203.0.113.7", 40000, "192.0.2.1", 7007, proxy=True)
        self.assertEqual(answer.data.decode(), textAnswer(expected))
        event = await self.server.waitForEvent(sightingLogged(ip="203.0.113.7"))
        self.assertEqual(loggedFields(event), expected)

    async def test_proxyV2(self) -> None:
        """
        After a binary PROXY v2 header for IPv6, the answer and the log
        event show the addresses of the header.
        """
        header = proxyV2("2001:db8::7", 40000, "2001:db8::1", 7007)
        answer = await fetchStream(reactor, "127.0.0.1", self.proxy, send=header)
        expected = sighting("tcp", "2001:db8::7", 40000, "2001:db8::1", 7007, proxy=True)
        self.assertEqual(answer.data.decode(), textAnswer(expected))
        event = await self.server.waitForEvent(sightingLogged(ip="2001:db8::7"))
        self.assertEqual(loggedFields(event), expected)

    async def test_tlsClient(self) -> None:
        """
        C{netservices info tcp --tls --ca CERT localhost:PORT} verifies the
        self-signed certificate and reports C{tls: true}.
        """
        answer = await self.ask(
            ["info", "tcp", "--tls", "--ca", str(self.caPEM), f"localhost:{self.tls}"]
        )
        expected = sighting(
            "tcp", "127.0.0.1", answer["port"], "127.0.0.1", self.tls, tls=True
        )
        self.assertEqual(answer, expected)
        event = await self.server.waitForEvent(sightingLogged(port=answer["port"]))
        self.assertEqual(loggedFields(event), expected)

    async def test_tlsVerificationFailures(self) -> None:
        """
        Without C{--ca} (the system trust store does not know our
        certificate) or with C{--server-name} another name than the
        certificate's, C{netservices info tcp --tls} fails with one line.
        """
        untrusted, wrongName = await gatherResults(
            [
                runCommand(reactor, ["info", "tcp", "--tls", f"localhost:{self.tls}"]),
                runCommand(
                    reactor,
                    [
                        "info",
                        "tcp",
                        "--tls",
                        "--ca",
                        str(self.caPEM),
                        "--server-name",
                        "wrong.example",
                        f"localhost:{self.tls}",
                    ],
                ),
            ],
            consumeErrors=True,
        )
        line = self.assertOneLineFailure(untrusted, f"localhost:{self.tls}")
        self.assertIn("certificate", line.lower())
        self.assertOneLineFailure(wrongName, f"localhost:{self.tls}", "wrong.example")

    async def test_proxyHeaderThenTLS(self) -> None:
        """
        On C{haproxy-ssl:}, a client that sends a cleartext PROXY v1 header
        and then does TLS gets C{tls=yes proxy=yes} and the header's
        addresses.
        """
        trust = Certificate.loadPEM(self.caPEM.read_bytes())
        answer = await fetchStream(
            reactor,
            "127.0.0.1",
            self.proxyTLS,
            send=PROXY_V1,
            tlsOptions=optionsForClientTLS("localhost", trustRoot=trust),
        )
        expected = sighting(
            "tcp", "203.0.113.7", 40000, "192.0.2.1", 7007, tls=True, proxy=True
        )
        self.assertEqual(answer.data.decode(), textAnswer(expected))
        event = await self.server.waitForEvent(sightingLogged(ip="203.0.113.7"))
        self.assertEqual(loggedFields(event), expected)
