"""
Multicast across a LAN of network namespaces, driven from this process:
any-source and source-specific delivery over IPv4 and IPv6, interface
choice, TTL / hop limit, socket isolation, exact loss under nftables,
sender rate, and authentication.
"""

from __future__ import annotations

import shutil
import socket

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol

from netservices._common.client import ClientError
from netservices._common.multicast import IP_MULTICAST_ALL, IPV6_MULTICAST_ALL, listenMulticast
from netservices.multicast import wire
from netservices.multicast.groups import parseGroups
from tests.multicast.lab import LabTestCase

KEY = b"multicast-test-key-0123456789"


def streamsBySource(receiver) -> dict:
    """
    @return: the receiver's streams as C{{(source, group): summary}}.
    """
    return {(s.source, s.describe()["group"]): s.describe() for s in receiver.streams.values()}


class DeliveryTests(LabTestCase):
    """
    What reaches whom.
    """

    async def assertAnySource(self, group: str, sender: str) -> None:
        groups = parseGroups(group)
        r2, d2 = self.receive(2, groups)
        r3, d3 = self.receive(3, groups)
        summary = await self.send(1, groups, count=20)
        self.assertEqual(summary["count"], 20)
        await d2
        await d3
        for receiver in (r2, r3):
            [stream] = receiver.streams.values()
            self.assertEqual(stream.source, sender)
            self.assertEqual(stream.group, groups[0].address)
            self.assertEqual((stream.stats.received, stream.stats.lost, stream.stats.finalCount), (20, 0, 20))
            # TTL / hop limit 1 by default, as received.
            self.assertEqual(stream.ttl, 1)
            self.assertEqual(stream.interface, "eth0")
            self.assertEqual([e["event"] for e in receiver.events], ["joined", "first"])

    async def test_anySourceIPv4(self) -> None:
        """
        Host 1 sends to an IPv4 group; hosts 2 and 3 each receive all 20
        datagrams, from host 1, with TTL 1.
        """
        await self.assertAnySource("239.31.1.1:5100", self.lab.address(1))

    async def test_anySourceIPv6(self) -> None:
        """
        The same over IPv6 (ff15::/16), hop limit 1.
        """
        await self.assertAnySource("[ff15::31:1]:5100", self.lab.address6(1))

    async def test_sourceSpecific(self) -> None:
        """
        A receiver joined to (host 1, G) gets host 1's datagrams and none of
        host 3's, over IPv4 (232/8) and IPv6 (ff35::); a canary group on
        the same host shows that host 3's datagrams had all arrived.
        """
        for ssm, canary, address in [
            ("232.31.1.1:5101", "239.31.1.9:5101", self.lab.address),
            ("[ff35::8000:31]:5101", "[ff15::31:9]:5101", self.lab.address6),
        ]:
            specific = parseGroups(f"{address(1)}@{ssm}")
            receiver, done = self.receive(2, specific)
            canaryReceiver, canaryDone = self.receive(2, parseGroups(canary))
            # Host 3 sends to both; its canary final comes after all its
            # datagrams to the SSM group, on the same path.
            await self.send(3, parseGroups(f"{address(3)}@{ssm}") + parseGroups(canary), count=10)
            await canaryDone
            await self.send(1, specific, count=10)
            await done
            self.assertEqual(list(streamsBySource(receiver)), [(address(1), str(specific[0]).split("@")[1])])
            self.assertEqual(receiver.refused, {})
            [stream] = receiver.streams.values()
            self.assertEqual(stream.stats.received, 10)

    async def test_otherSocketsGroup(self) -> None:
        """
        Two sockets on one host and port, each joined to its own group,
        receive only their own group (IP_MULTICAST_ALL off), over IPv4
        and IPv6; a plain socket with the kernel default receives both.
        """
        for a, b in [("239.31.2.1", "239.31.2.2"), ("ff15::31:21", "ff15::31:22")]:
            first = parseGroups(f"[{a}]:5102" if ":" in a else f"{a}:5102")
            second = parseGroups(f"[{b}]:5102" if ":" in b else f"{b}:5102")
            r1, d1 = self.receive(2, first)
            r2, d2 = self.receive(2, second, expectSources=1)
            family = socket.AF_INET6 if ":" in a else socket.AF_INET
            leaky = _Collector()
            with self.lab.inside(2):
                port = listenMulticast(reactor, 5102, leaky, family)
                level = socket.IPPROTO_IP if family == socket.AF_INET else socket.IPPROTO_IPV6
                self.assertEqual(
                    port.socket.getsockopt(level, IP_MULTICAST_ALL if family == socket.AF_INET else IPV6_MULTICAST_ALL), 0
                )
                port.socket.setsockopt(level, IP_MULTICAST_ALL if family == socket.AF_INET else IPV6_MULTICAST_ALL, 1)
            self.addCleanup(port.stopListening)
            await self.send(1, first + second, count=5)
            await d1
            await d2
            self.assertEqual({s.group for s in r1.streams.values()}, {first[0].address})
            self.assertEqual({s.group for s in r2.streams.values()}, {second[0].address})
            self.assertEqual(
                {info.destination for _, _, info in leaky.received},
                {first[0].address, second[0].address},
            )

    async def test_loopback(self) -> None:
        """
        A receiver on the sending host gets the datagrams by default, and
        none with loop off, while one on another host gets them either way
        (its end shows all have arrived).
        """
        groups = parseGroups("[ff15::31:13]:5113")
        for loop, expected in [(True, [5]), (False, [])]:
            local, localDone = self.receive(1, groups)
            remote, remoteDone = self.receive(2, groups)
            await self.send(1, groups, count=5, loop=loop)
            await remoteDone
            if loop:
                await localDone
            self.assertEqual([s.stats.received for s in local.streams.values()], expected)
            local._finish()

    async def test_sharedPort(self) -> None:
        """
        Two receivers on one host, group and port (as two node instances
        would be) both get every datagram.
        """
        groups = parseGroups("239.31.12.1:5112")
        first, firstDone = self.receive(2, groups)
        second, secondDone = self.receive(2, groups)
        await self.send(1, groups, count=10)
        await firstDone
        await secondDone
        for receiver in (first, second):
            self.assertEqual([s.stats.received for s in receiver.streams.values()], [10])

    async def test_interfaceByName(self) -> None:
        """
        A receiver joined on C{eth0} by name gets the datagrams; one joined
        on C{lo} only, on the same host, group and port, gets none.
        """
        groups = parseGroups("239.31.3.1:5103")
        onEth, ethDone = self.receive(2, groups, interfaces=[("eth0", self.index(2))])
        onLo, loDone = self.receive(2, groups, interfaces=[("lo", self.index(2, "lo"))])
        await self.send(1, groups, count=5)
        await ethDone
        self.assertEqual([s.stats.received for s in onEth.streams.values()], [5])
        self.assertEqual(onLo.streams, {})
        self.assertEqual(onEth.events[0]["interface"], "eth0")

    async def test_noRoute(self) -> None:
        """
        On a host without a multicast route, joining or sending without
        --interface fails with an error saying so; naming the interface
        works.
        """
        self.lab.run(1, "ip", "route", "del", "224.0.0.0/4")
        groups = parseGroups("239.31.4.1:5104")
        error = self.assertRaises(ClientError, self.receive, 1, groups)
        self.assertIn("no route to the group", str(error))
        self.assertIn("--interface", str(error))
        with self.assertRaises(ClientError) as caught:
            await self.send(1, groups, count=2)
        self.assertIn("no route to the group", str(caught.exception))
        receiver, done = self.receive(2, groups)
        await self.send(1, groups, count=3, interface=self.index(1))
        await done
        self.assertEqual([s.stats.received for s in receiver.streams.values()], [3])

    async def test_hopLimit(self) -> None:
        """
        --ttl sets IP_MULTICAST_TTL on IPv4 and IPV6_MULTICAST_HOPS on IPv6
        (read back with getsockopt), and receivers see it.
        """
        with self.lab.inside(1):
            port6 = listenMulticast(reactor, 0, DatagramProtocol(), socket.AF_INET6)
            self.addCleanup(port6.stopListening)
        port6.setSendOptions(ttl=5)
        self.assertEqual(port6.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS), 5)
        self.assertEqual(port6.getHopLimit(), 5)
        for text in ["239.31.5.1:5105", "[ff15::31:51]:5105"]:
            groups = parseGroups(text)
            receiver, done = self.receive(2, groups)
            await self.send(1, groups, count=3, ttl=5)
            await done
            self.assertEqual([s.ttl for s in receiver.streams.values()], [5])


class LossTests(LabTestCase):
    """
    Loss counted exactly, and the sender's rate bounded.
    """

    async def test_exactLossUnderNftables(self) -> None:
        """
        nftables drops every 10th datagram at host 3's input: host 3
        reports exactly 10 lost of 100, as ranges 0, 10, ..., 90; host 2
        reports none.
        """
        if shutil.which("nft") is None:
            raise self.skipTest("needs nftables")
        self.lab.run(3, "nft", "add", "table", "inet", "loss")
        self.lab.run(3, "nft", "add", "chain", "inet", "loss", "input",
                     "{ type filter hook input priority 0 ; }")
        self.lab.run(3, "nft", "add", "rule", "inet", "loss", "input",
                     "udp", "dport", "5106", "numgen", "inc", "mod", "10", "==", "0", "drop")
        groups = parseGroups("239.31.6.1:5106")
        r2, d2 = self.receive(2, groups)
        r3, d3 = self.receive(3, groups)
        await self.send(1, groups, count=100, rate=5000)
        await d2
        await d3
        [lossy] = r3.streams.values()
        self.assertEqual(lossy.stats.lost, 10)
        self.assertEqual(lossy.stats.gaps, [[n, n] for n in range(0, 100, 10)])
        self.assertEqual((lossy.stats.received, lossy.stats.finalCount), (90, 100))
        self.assertEqual(r3.check(maxLoss=10), [])
        self.assertEqual(len(r3.check(maxLoss=9.9)), 1)
        [clean] = r2.streams.values()
        self.assertEqual((clean.stats.received, clean.stats.lost), (100, 0))
        gaps = [(e["first"], e["last"]) for e in r3.events if e["event"] == "gap"]
        self.assertEqual(gaps, [(n, n) for n in range(0, 100, 10)])

    async def test_rateBounded(self) -> None:
        """
        At --rate 200 for 0.5 s, the sender sends no more than its burst
        plus 200 a second, and the receiver gets exactly that many.
        """
        groups = parseGroups("239.31.7.1:5107")
        receiver, done = self.receive(2, groups)
        summary = await self.send(1, groups, count=10**6, rate=200, duration=0.5)
        await done
        self.assertLessEqual(summary["count"], 4 + 200 * summary["seconds"])
        self.assertGreater(summary["count"], 50)
        [stream] = receiver.streams.values()
        self.assertEqual(stream.stats.received, summary["count"])
        self.assertLessEqual(stream.stats.rate[0], 210)


class AuthenticationTests(LabTestCase):
    """
    --key-file: HMAC on every datagram, replay window.
    """

    async def test_forgedAndReplayedRefused(self) -> None:
        """
        A keyed receiver counts host 1's keyed stream; unkeyed, wrongly
        keyed and replayed datagrams (valid tags, old sequence numbers,
        sent by host 3) are refused and counted, and nothing crashes.
        """
        groups = parseGroups("239.31.8.1:5108")
        receiver, done = self.receive(2, groups, codec=wire.Codec(KEY), expectSources=2)
        await self.send(3, groups, count=5)
        await self.send(3, groups, count=5, codec=wire.Codec(b"wrong-key-wrong-key"))
        first = await self.send(1, groups, count=10, codec=wire.Codec(KEY))
        sender, session = int(first["sender"], 16), int(first["session"], 16)
        codec = wire.Codec(KEY)
        with self.lab.inside(3):
            raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with raw:
            for n in range(10):
                raw.sendto(codec.encode(wire.DATA, sender, session, n, 0), (groups[0].address, groups[0].port))
        # A second keyed sender ends the run: its datagrams follow the
        # replays on the same path.
        await self.send(3, groups, count=5, codec=wire.Codec(KEY))
        await done
        self.assertEqual(
            dict(receiver.refused),
            {"unauthenticated": 5 + 3, "forged": 5 + 3, "replayed": 10},
        )
        counts = sorted((s.source, s.stats.received, s.stats.lost) for s in receiver.streams.values())
        self.assertEqual(counts, [(self.lab.address(1), 10, 0), (self.lab.address(3), 5, 0)])


class _Collector(DatagramProtocol):
    """
    Keeps what arrives, with its info.
    """

    def __init__(self) -> None:
        self.received: list = []

    def datagramReceivedWithInfo(self, data, addr, info) -> None:
        self.received.append((data, addr, info))


class KernelFactTests(LabTestCase):
    """
    Kernel behaviour the socket layer is built around, pinned.
    """

    hosts = 2

    def test_reusePortBreaksGroupDelivery(self) -> None:
        """
        With SO_REUSEPORT, a datagram to a group goes to one socket of the
        port chosen by a hash of the addresses and ports, whether or not it
        joined the group: from 16 source ports, some datagrams land on the
        wrong one of two sockets joined to different groups.  Without it
        (our sockets), each gets exactly its own group.  Every datagram
        reaches one of the two sockets in both cases, so the reads wait
        for all 32 (bounded by 5 s), never for a fixed time.
        """
        import select

        from netservices._common.multicast import join, prepareSocket

        def misdelivered(reusePort: bool) -> int:
            with self.lab.inside(2):
                a, b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in "ab")
                for skt, group in ((a, "239.31.11.1"), (b, "239.31.11.2")):
                    prepareSocket(skt, socket.AF_INET)
                    skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reusePort))
                    skt.bind(("", 5111))
                    join(skt, group)
            with self.lab.inside(1):
                senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
            got = {a: [], b: []}
            try:
                for sender in senders:
                    sender.sendto(b"a", ("239.31.11.1", 5111))
                    sender.sendto(b"b", ("239.31.11.2", 5111))
                deadline = reactor.seconds() + 5
                while sum(map(len, got.values())) < 32 and reactor.seconds() < deadline:
                    readable, _, _ = select.select([a, b], [], [], 0.5)
                    for skt in readable:
                        got[skt].append(skt.recv(10))
            finally:
                for skt in [a, b, *senders]:
                    skt.close()
            self.assertEqual(sum(map(len, got.values())), 32)
            return got[a].count(b"b") + got[b].count(b"a")

        self.assertEqual(misdelivered(False), 0)
        self.assertGreater(misdelivered(True), 0)
