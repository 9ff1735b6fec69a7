"""
Integration tests of tcp-echo and udp-echo: the real servers under twistd,
over loopback sockets, and in network namespaces.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import ssl
import struct
import sys

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread

from netservices.testing import (
    NO_IPV6,
    NetworkLab,
    TwistdTestCase,
    netservicesCommand,
    openDatagramClient,
    runProcess,
    writeCertificate,
)

#: A message whose every byte can be checked.
PATTERN = bytes(i % 251 for i in range(100 * 1024))


def echoOverSocket(
    host: str, port: int, payload: bytes, header: bytes = b"", tls=None
) -> bytes:
    """
    Over a blocking TCP socket (run it in a thread): send C{header} (a
    PROXY header, say), start TLS with the C{ssl.SSLContext} C{tls} if
    given, send C{payload} and read as many bytes back.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect((host, port))
        s.sendall(header)
        stream = s if tls is None else tls.wrap_socket(s, server_hostname="localhost")
        stream.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = stream.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def processRSS(pid: int) -> int:
    """
    @return: the resident memory of process C{pid}, in KiB.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class TCPEchoTests(TwistdTestCase):
    """
    tcp-echo over IPv4, IPv6, TLS and PROXY.
    """

    skip = NO_IPV6

    async def test_echo(self) -> None:
        """
        Every byte comes back in order, over IPv4 and IPv6, for small and
        100 KiB messages, on several connections at once.
        """
        server = await self.startServer(
            ["tcp-echo", "--listen", "tcp:0:interface=127.0.0.1",
             "--listen", "tcp6:0:interface=\\:\\:1"],
            2,
        )
        (host4, port4), (host6, port6) = server.addresses
        payloads = [b"x", b"hello\r\n", PATTERN]
        results = await gatherResults(
            [
                deferToThread(echoOverSocket, host, port, payload)
                for host, port in [(host4, port4), (host6, port6)]
                for payload in payloads
            ]
        )
        self.assertEqual(results, payloads * 2)

    async def test_tlsAndProxy(self) -> None:
        """
        Over C{ssl:} the echo comes back through TLS; behind C{haproxy:} the
        PROXY header is consumed and only what follows is echoed.
        """
        pem, ca = writeCertificate(self.temporaryDirectory())
        server = await self.startServer(
            ["tcp-echo",
             "--listen", f"ssl:0:privateKey={pem}:interface=127.0.0.1",
             "--listen", "haproxy:tcp:0:interface=127.0.0.1"],
            2,
        )
        (_, tlsPort), (_, proxyPort) = server.addresses
        context = ssl.create_default_context(cafile=str(ca))
        header = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 7777\r\n"
        answers = await gatherResults(
            [
                deferToThread(echoOverSocket, "127.0.0.1", tlsPort, PATTERN, tls=context),
                deferToThread(echoOverSocket, "127.0.0.1", proxyPort, b"proxied", header),
            ]
        )
        self.assertEqual(answers, [PATTERN, b"proxied"])

    async def test_backPressure(self) -> None:
        """
        A client that sends 100 MiB without reading does not make the
        server buffer it: the server stops reading, its memory grows by less
        than 8 MiB, and once the client reads, every byte comes back in
        order.
        """
        server = await self.startServer(
            ["tcp-echo", "--listen", "tcp:0:interface=127.0.0.1"], 1
        )
        [(host, port)] = server.addresses
        before = processRSS(server.pid)
        total = 100 * 1024 * 1024

        def flood() -> tuple[int, int, int, bool]:
            with socket.create_connection((host, port), timeout=30) as s:
                s.setblocking(False)
                block = PATTERN[: 64 * 1024]
                sent = received = 0
                mismatch = False
                # Send without reading until the server stops taking data:
                # no progress for 2 s means it has stopped reading.
                while sent < total:
                    _, writable, _ = select.select([], [s], [], 2.0)
                    if not writable:
                        break
                    try:
                        sent += s.send(block[sent % len(block):])
                    except BlockingIOError:
                        pass
                stalledAt = sent
                grown = processRSS(server.pid) - before
                # Now read: the connection must be served normally.
                while received < total:
                    readable, writable, _ = select.select([s], [s] if sent < total else [], [], 30)
                    if not readable and not writable:
                        raise RuntimeError("echo stalled")
                    if writable:
                        try:
                            sent += s.send(block[sent % len(block):][: total - sent])
                        except BlockingIOError:
                            pass
                    if readable:
                        chunk = s.recv(1 << 20)
                        if not chunk:
                            break
                        start = received % len(block)
                        expected = (block[start:] + block * (len(chunk) // len(block) + 2))[: len(chunk)]
                        mismatch = mismatch or chunk != expected
                        received += len(chunk)
                return stalledAt, grown, received, mismatch

        stalledAt, grown, received, mismatch = await deferToThread(flood)
        self.assertLess(stalledAt, total, "the server never stopped reading")
        self.assertLess(grown, 8 * 1024, f"server RSS grew by {grown} KiB")
        self.assertEqual((received, mismatch), (total, False))


class UDPEchoTests(TwistdTestCase):
    """
    udp-echo over loopback.
    """

    skip = NO_IPV6

    async def test_echo(self) -> None:
        """
        C{--port N} works as written; datagrams of every size up to 65,507
        bytes come back whole, over IPv4 and IPv6.
        """
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        server = await self.startServer(
            ["udp-echo", "--port", str(port), "--listen", "udp:0:interface=\\:\\:1"], 2
        )
        (_, port4), (_, port6) = server.addresses
        self.assertEqual(port4, port)
        for interface, serverPort in [("127.0.0.1", port4), ("::1", port6)]:
            client = openDatagramClient(reactor, interface)
            self.addCleanup(client.close)
            for size in (0, 1, 1024, 9000, 65507):
                payload = (PATTERN * 1)[:size] if size <= len(PATTERN) else bytes(size)
                client.send(payload, (interface, serverPort))
                data, source = await client.nextDatagram()
                self.assertEqual((len(data), data == payload, source[1]), (size, True, serverPort))

    async def test_forgedLoopStops(self) -> None:
        """
        Two udp-echo servers fed one datagram forged to come from the other
        echo each other until the rate limit stops it: no more than 2 ×
        burst answers in all.
        """
        if os.geteuid() != 0:
            raise self.skipTest("forging a datagram needs a raw socket (root)")
        burst = 40
        options = ["--rate", "0", "--burst", str(burst)]
        a = await self.startServer(["udp-echo", "--listen", "udp:0:interface=127.0.0.1", *options], 1)
        b = await self.startServer(["udp-echo", "--listen", "udp:0:interface=127.0.0.1", *options], 1)
        [(_, portA)], [(_, portB)] = a.addresses, b.addresses
        payload = b"storm"
        header = struct.pack("!HHHH", portB, portA, 8 + len(payload), 0)
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) as raw:
            raw.sendto(header + payload, ("127.0.0.1", 0))

        # A got the forged datagram first, so A runs out of tokens first.
        await a.waitForEvent(lambda event: event.get("reason") == "rate-limit-prefix")
        totals = []
        for server in (a, b):
            await server.stop()
            [event] = server.eventsMatching(lambda e: "answered" in e)
            totals.append(event["answered"])
        self.assertEqual(totals, [burst, burst])


class BroadcastTests(TwistdTestCase):
    """
    udp-echo on a wildcard address, on a LAN of network namespaces.
    """

    def setUp(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise self.skipTest("network namespaces need root and iproute2")
        self.lab = NetworkLab(2)
        self.addCleanup(self.lab.remove)
        self.lab.create()

    async def test_directedBroadcastNotAnswered(self) -> None:
        """
        A datagram to the subnet's directed broadcast address reaches a
        server bound to 0.0.0.0 but gets no echo (the refusal is logged);
        a unicast datagram sent after it is echoed.
        """
        answer, counts, server = await self.broadcastThenUnicast("0.0.0.0")
        self.assertEqual((answer, counts), (b"unicast", (2, 1)))
        refusals = server.eventsMatching(
            lambda e: e.get("reason") == "broadcast-or-multicast-destination"
        )
        self.assertEqual(len(refusals), 1)

    async def broadcastThenUnicast(self, interface: str):
        """
        Start udp-echo on port 7777 of C{interface} on host 2; from host 1,
        send it a directed broadcast, then a unicast datagram; stop it.

        @return: the first answer (C{b"timeout"} if none came within 2 s),
            the datagrams received and answered, and the server.
        """
        server = await self.startServer(
            ["udp-echo", "--listen", f"udp:7777:interface={interface}"],
            1,
            prefix=self.lab.prefix(2),
        )
        script = (
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
            "s.bind(('0.0.0.0', 40000))\n"
            "s.settimeout(2)\n"
            f"s.sendto(b'broadcast', ('{self.lab.broadcast}', 7777))\n"
            f"s.sendto(b'unicast', ('{self.lab.address(2)}', 7777))\n"
            "try:\n"
            "    print(s.recvfrom(100)[0].decode())\n"
            "except socket.timeout:\n"
            "    print('timeout')\n"
        )
        out, err, code = await runProcess(
            reactor, [*self.lab.prefix(1), sys.executable, "-c", script]
        )
        self.assertEqual(code, 0, err)
        await server.stop()
        [totals] = server.eventsMatching(lambda e: "answered" in e)
        return out.strip(), (totals["received"], totals["answered"]), server

    async def test_unicastBindGetsNoBroadcast(self) -> None:
        """
        Bound to its unicast address, udp-echo reads without ancillary data
        (L{netservices._common.datagram.boundToUnicast}): that is safe
        because the kernel never delivers it the directed broadcast, which
        is neither answered nor even received.
        """
        answer, counts, _ = await self.broadcastThenUnicast(self.lab.address(2))
        self.assertEqual((answer, counts), (b"unicast", (1, 1)))

    async def test_broadcastAddressBind(self) -> None:
        """
        Bound to the subnet's broadcast address, which receives directed
        broadcasts, udp-echo reads every datagram's destination and refuses
        them.
        """
        answer, counts, server = await self.broadcastThenUnicast(self.lab.broadcast)
        self.assertEqual((answer, counts), (b"timeout", (1, 0)))
        refusals = server.eventsMatching(
            lambda e: e.get("reason") == "broadcast-or-multicast-destination"
        )
        self.assertEqual(len(refusals), 1)


class LossTests(TwistdTestCase):
    """
    The UDP echo client over a lossy link in network namespaces.
    """

    def setUp(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None:
            raise self.skipTest("needs root, iproute2 and nftables")
        self.lab = NetworkLab(2, subnet="10.214.0")
        self.addCleanup(self.lab.remove)
        self.lab.create()
        # Every 10th datagram reaching the server is dropped, exactly.
        self.lab.run(2, "nft", "add", "table", "inet", "loss")
        self.lab.run(
            2, "nft", "add", "chain", "inet", "loss", "input",
            "{ type filter hook input priority 0 ; }",
        )
        self.lab.run(
            2, "nft", "add", "rule", "inet", "loss", "input",
            "udp", "dport", "7777", "numgen", "inc", "mod", "10", "==", "0", "drop",
        )

    async def test_retriesRecoverEveryLoss(self) -> None:
        """
        1,000 requests with every 10th datagram dropped at the server's
        input: all confirmed by retries, none lost, none duplicated.
        """
        await self.startServer(
            ["udp-echo", "--listen", f"udp:7777:interface={self.lab.address(2)}",
             "--rate", "100000", "--burst", "100000"],
            1,
            prefix=self.lab.prefix(2),
        )
        out, err, code = await runProcess(
            reactor,
            [*self.lab.prefix(1), *netservicesCommand(
                ["echo", "udp", f"{self.lab.address(2)}:7777", "--count", "1000",
                 "--size", "100", "--interval", "0", "--timeout", "0.05",
                 "--retries", "5", "--json", "--quiet"]
            )],
            timeout=120,
        )
        [summary] = [json.loads(line) for line in out.splitlines() if b'"summary"' in line]
        self.assertEqual(
            {k: summary[k] for k in ("sent", "received", "lost", "duplicated", "corrupted")},
            {"sent": 1000, "received": 1000, "lost": 0, "duplicated": 0, "corrupted": 0},
            err,
        )
        # Each drop costs a retry: the 1,000 first tries alone lose 100.
        self.assertGreaterEqual(summary["retries"], 100)
        self.assertEqual(code, 0, err)
