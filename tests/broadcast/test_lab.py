"""
Broadcast peers in a namespace LAN, driven from this process (one reactor,
sockets made inside each host's namespace).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from netservices.broadcast import wire
from netservices.broadcast.protocol import BroadcastPeer, PeerSettings, describeInterface
from netservices.testing import NetworkLab

_labs = itertools.count()
PORT = 4114
KEY = b"broadcast-test-key-0123456789"

NO_LAB = (
    "network namespaces need root, iproute2 and nftables"
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None
    else None
)


class WatchedPeer(BroadcastPeer):
    """
    A peer that records its events and lets a test wait until a condition
    on it holds, checked after every datagram.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[dict] = []
        self.onEvent = self.events.append
        self._waits: list[tuple] = []

    def datagramReceivedWithInfo(self, data, addr, info) -> None:
        super().datagramReceivedWithInfo(data, addr, info)
        for entry in list(self._waits):
            condition, d = entry
            if condition(self):
                self._waits.remove(entry)
                d.callback(self)

    def until(self, condition, timeout: float = 10.0) -> Deferred:
        """
        @return: a L{Deferred} firing once C{condition(self)} holds, failing
            after C{timeout} seconds.
        """
        d: Deferred = Deferred()
        if condition(self):
            d.callback(self)
            return d
        self._waits.append((condition, d))
        call = reactor.callLater(timeout, lambda: d.called or d.errback(AssertionError("timed out")))
        d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return d

    def messages(self) -> list[tuple[str, int, str]]:
        return [(e["peer"], e["sequence"], e["text"]) for e in self.events if e["event"] == "message"]


def refused(peer: BroadcastPeer) -> int:
    return sum(peer.refusals.counts.values())


class LabTests(TestCase):
    """
    Peers on a 4-host LAN.
    """

    skip = NO_LAB

    def setUp(self) -> None:
        n = next(_labs)
        self.lab = NetworkLab(4, subnet="10.232.0", name=f"bc{os.getpid()}{n}", subnet6="fd32:232::")
        self.addCleanup(self.lab.remove)
        self.lab.create()
        self.peers: list[BroadcastPeer] = []
        self.addCleanup(self.stopAll)

    def stopAll(self) -> None:
        for peer in self.peers:
            peer.stop()

    def peer(self, host: int, key: bytes | None = None, **settings) -> WatchedPeer:
        """
        Start a peer on host C{host}'s eth0.
        """
        with self.lab.inside(host):
            interface = describeInterface("eth0")
            peer = WatchedPeer(reactor, PeerSettings(interface, port=PORT, **settings), wire.Codec(key))
            peer.start()
        self.peers.append(peer)
        return peer

    def countOnLink(self) -> Deferred:
        self.lab.run(None, "nft", "add", "table", "bridge", "bct")
        self.lab.run(None, "nft", "add", "chain", "bridge", "bct", "c",
                     "{ type filter hook prerouting priority 0; }")
        self.lab.run(None, "nft", "add", "rule", "bridge", "bct", "c", "udp", "dport", str(PORT), "counter")

    def onLink(self) -> int:
        text = self.lab.run(None, "nft", "list", "chain", "bridge", "bct", "c")
        return int(re.search(r"packets (\d+)", text).group(1))

    async def test_everyoneOnceNoStorm(self) -> None:
        """
        Three peers (host 1 with no routes at all, sending limited
        broadcast; hosts 2 and 3 directed) and a fourth, server-like peer:
        each of the three sends one message; every other peer receives
        each exactly once, with its sender, interface and addressing; the
        datagrams on the bridge (an nftables counter at its ingress) are
        exactly those the peers sent (hello, data, here answers, bye), so
        nothing was re-broadcast.
        """
        self.countOnLink()
        self.lab.run(1, "ip", "route", "flush", "table", "main")
        self.assertEqual(self.lab.run(1, "ip", "route", "show").strip(), "")
        peers = [self.peer(1, mode="limited"), self.peer(2, mode="directed"),
                 self.peer(3, mode="auto"), self.peer(4)]
        self.assertEqual(peers[0].targets, ["255.255.255.255"])
        self.assertEqual(peers[1].targets, [self.lab.broadcast])
        for i, peer in enumerate(peers[:3]):
            self.assertTrue(peer.send(f"from host {i + 1}"))
        for i, peer in enumerate(peers):
            expected = 2 if i < 3 else 3
            await peer.until(lambda p, n=expected: len(p.messages()) >= n)
        for i, peer in enumerate(peers):
            senders = [p for j, p in enumerate(peers[:3]) if j != i]
            self.assertEqual(
                sorted(peer.messages()),
                sorted((f"{s.id:016x}", 1, f"from host {peers.index(s) + 1}")
                       for s in senders),
            )
        server = peers[3]
        byText = {e["text"]: e for e in server.events if e["event"] == "message"}
        self.assertEqual(byText["from host 1"]["addressed"], "limited")
        self.assertEqual(byText["from host 2"]["addressed"], "directed")
        self.assertEqual(byText["from host 1"]["address"], self.lab.address(1))
        self.assertEqual({e["interface"] for e in byText.values()}, {"eth0"})
        self.assertEqual({e["ttl"] for e in byText.values()}, {255})
        self.stopAll()
        sent = sum(p.totals["sent"] for p in peers)
        self.assertEqual(self.onLink(), sent)
        self.assertEqual(sum(p.totals["duplicate"] for p in peers), 0)
        for peer in peers:
            self.assertEqual(dict(peer.refusals.counts), {})

    def raw(self, host: int, data: bytes, ttl: int = 255, source: str = "",
            destination: str | None = None) -> None:
        """
        Send C{data} from host C{host} to the broadcast port with a plain
        socket.
        """
        with self.lab.inside(host):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
                if source:
                    s.bind((source, 0))
                s.sendto(data, (destination or self.lab.broadcast, PORT))

    async def test_refusals(self) -> None:
        """
        A keyed peer refuses a datagram with TTL 64, one from outside its
        subnet, a forged one, a replayed one and a unicast one, and
        delivers only a burst from one source beyond its rate; each
        refusal is counted under its reason.
        """
        receiver = self.peer(2, KEY, announce=False, rate=0.001, burst=3.0)
        codec = wire.Codec(KEY)
        me = wire.newId()

        def good(seq: int) -> bytes:
            return codec.encode(wire.DATA, me, seq, int(time.time() * 1e9), 30, b"m%d" % seq)

        self.raw(1, good(0), ttl=64)
        self.lab.run(1, "ip", "addr", "add", "10.99.0.1/24", "dev", "eth0")
        self.raw(1, good(1), source="10.99.0.1")
        await receiver.until(lambda p: refused(p) == 2)
        self.assertEqual(dict(receiver.refusals.counts), {"ttl": 1, "off-subnet": 1})
        # Another source for the rest, with its own rate bucket.
        data = good(2)
        self.raw(3, data[:-1] + bytes([data[-1] ^ 1]))
        self.raw(3, data)
        self.raw(3, data)
        await receiver.until(lambda p: refused(p) == 4 and len(p.messages()) == 1)
        self.assertEqual(receiver.refusals.counts["forged"], 1)
        self.assertEqual(receiver.refusals.counts["replayed"], 1)
        for seq in range(3, 13):
            self.raw(4, good(seq))
        await receiver.until(lambda p: refused(p) + len(p.messages()) == 4 + 1 + 10)
        self.assertEqual(receiver.refusals.counts["rate-limit"], 7)
        self.assertEqual(len(receiver.messages()), 1 + 3)
        self.raw(1, good(20), destination=self.lab.address(2))
        await receiver.until(lambda p: p.refusals.counts["unicast"] == 1)

    async def test_ipv6(self) -> None:
        """
        With C{--family 6}, peers join ff02::114 on eth0 by index: a
        message reaches the other peer once, from its address, hop
        limit 255.
        """
        a = self.peer(1, family=socket.AF_INET6, announce=False)
        b = self.peer(2, family=socket.AF_INET6, announce=False)
        self.assertTrue(a.send("over IPv6"))
        await b.until(lambda p: len(p.messages()) == 1)
        [event] = [e for e in b.events if e["event"] == "message"]
        self.assertEqual((event["destination"], event["ttl"], event["addressed"]), ("ff02::114", 255, "multicast"))
        self.assertTrue(event["address"].startswith("fe80::") or event["address"] == self.lab.address6(1))
        self.assertEqual(a.messages(), [])
