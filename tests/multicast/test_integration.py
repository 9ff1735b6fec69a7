"""
End to end: C{twistd -n netservices multicast} and C{netservices mcast
send|recv|ping} as child processes inside the hosts of a namespace LAN.
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import Deferred

from netservices.testing import (
    DEFAULT_TIMEOUT,
    TwistdTestCase,
    _deadline,
    _ProcessBase,
    _spawn,
    eventText,
    netservicesCommand,
    oneLineFailure,
    runProcess,
    startTwistd,
)
from tests.multicast.lab import NO_LAB, newLab


class _Watched(_ProcessBase):
    """
    A command whose standard output is watched for a marker.
    """

    def __init__(self, reactor, argv, marker: bytes) -> None:
        super().__init__(reactor, argv)
        self.marker = marker
        self._marked: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        super().outReceived(data)
        if self.marker in self.stdout and not self._marked.called:
            self._marked.callback(None)

    def processEnded(self, reason) -> None:
        super().processEnded(reason)
        if not self._marked.called:
            self._marked.errback(self._failure("ended before its marker"))


def spawnWatched(argv, marker: bytes) -> _Watched:
    """
    Start C{argv}; C{.seen} fires once C{marker} was printed.
    """
    process = _Watched(reactor, argv, marker)
    process.directory = _spawn(reactor, process, argv, None)
    process.transport.closeStdin()
    process.seen = _deadline(reactor, process._marked, DEFAULT_TIMEOUT, process._kill,
                             lambda: process._failure("no marker in time"))
    return process


def ndjson(output: bytes) -> list[dict]:
    """
    @return: the JSON objects of NDJSON output.
    """
    return [json.loads(line) for line in output.decode().splitlines() if line.strip()]


class EndToEndTests(TwistdTestCase):
    """
    The node and the tools in a 3-host lab.
    """

    skip = NO_LAB

    def setUp(self) -> None:
        self.lab = newLab(3)
        self.addCleanup(self.lab.remove)
        self.lab.create()

    def mcast(self, host: int, *args: str):
        """
        Run C{netservices mcast ARGS} on host C{host}.
        """
        return runProcess(reactor, [*self.lab.prefix(host), *netservicesCommand(["mcast", *args])])

    async def test_nodeAndPing(self) -> None:
        """
        A node on host 2 joins an IPv4 group, an IPv6 group and an SSM group
        (source host 1); C{mcast ping} from host 1 gets multicast and
        unicast round trips from it over both families; C{mcast send} from
        host 1 shows up in the node's log with group, interface and TTL;
        the node logs its totals on stop.
        """
        lab = self.lab
        node = await self.startServer(
            ["multicast", "--group", "239.31.9.1", "--group", "[ff15::31:91]",
             "--group", f"{lab.address(1)}@232.31.9.1", "--interface", "eth0"],
            2, prefix=lab.prefix(2),
        )
        out, err, code = await self.mcast(
            1, "ping", "--group", "239.31.9.1", "--group", "ff15::31:91",
            "--group", f"{lab.address(1)}@232.31.9.1", "--count", "2",
            "--interval", "0.2", "--timeout", "0.5", "--json",
        )
        self.assertEqual(code, 0, err)
        self.assertIn(b"unauthenticated", err)
        events = ndjson(out)
        [summary] = [e for e in events if e["event"] == "summary"]
        nodes = {row["node"]: row for row in summary["nodes"]}
        self.assertEqual(set(nodes), {f"{lab.address(2)}:5007", f"[{lab.address6(2)}]:5007"})
        v4 = nodes[f"{lab.address(2)}:5007"]
        # Two rounds to two IPv4 groups; a unicast probe in the second.
        self.assertEqual(v4["multicast"]["received"], 4)
        self.assertEqual(v4["unicast"]["received"], 1)
        self.assertEqual(nodes[f"[{lab.address6(2)}]:5007"]["multicast"]["received"], 2)
        out, err, code = await self.mcast(
            1, "send", "--group", "239.31.9.1", "--count", "3", "--rate", "100", "--json"
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(ndjson(out)[0]["count"], 3)
        event = await node.waitForEvent(
            lambda e: "data from" in eventText(e) and e.get("group") == "239.31.9.1"
        )
        self.assertEqual(
            (event["source"], event["interface"], event["ttl"], event["size"]),
            (lab.address(1), "eth0", 1, 100),
        )
        await node.waitForEvent(lambda e: "final from" in eventText(e))
        await node.stop()
        totals = node.eventsMatching(lambda e: "totals" in e)
        self.assertEqual(totals[0]["totals"]["data"], 3)
        # 2 rounds x 3 groups, and 2 unicast probes in the second round.
        self.assertEqual(totals[0]["totals"]["probe"], 8)
        self.assertEqual(totals[0]["totals"]["replies"], 8)

    async def test_recvJSONAndExitStatus(self) -> None:
        """
        C{mcast recv --json} on hosts 2 and 3 prints NDJSON events (joined,
        first, summary); with expectations met it exits 0, and with
        C{--expect-count} above what was sent, 1, naming the failure.
        """
        lab = self.lab
        common = ["--group", "[ff15::31:a1]:5110", "--json", "--duration", "20"]
        happy = spawnWatched(
            [*lab.prefix(2), *netservicesCommand(
                ["mcast", "recv", *common, "--expect-count", "10", "--max-loss", "0",
                 "--expect-sources", "1"])],
            b'"joined"',
        )
        unhappy = spawnWatched(
            [*lab.prefix(3), *netservicesCommand(["mcast", "recv", *common, "--expect-count", "11"])],
            b'"joined"',
        )
        await happy.seen
        await unhappy.seen
        out, err, code = await self.mcast(
            1, "send", "--group", "[ff15::31:a1]:5110", "--count", "10", "--rate", "1000"
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(await happy.whenEnded(), 0, happy.stderr)
        self.assertEqual(await unhappy.whenEnded(), 1, unhappy.stderr)
        events = ndjson(happy.stdout)
        self.assertEqual([e["event"] for e in events], ["joined", "first", "summary"])
        summary = events[-1]
        self.assertTrue(summary["ok"])
        [stream] = summary["streams"]
        self.assertEqual(
            (stream["source"], stream["received"], stream["lost"], stream["ttl"], stream["final"]),
            (lab.address6(1), 10, 0, 1, 10),
        )
        unhappySummary = ndjson(unhappy.stdout)[-1]
        self.assertFalse(unhappySummary["ok"])
        self.assertIn("10 received, expected 11", unhappySummary["failures"][0])

    async def test_errorsAreOneLine(self) -> None:
        """
        Bad groups, an SSM group without a source, and a join without a
        route are one line and exit status 2 (usage) or 1 (failure); the
        node refuses too many IPv4 groups naming the sysctl.
        """
        oneLineFailure(self, await self.mcast(1, "recv", "--group", "10.1.1.1"), "not a multicast", code=2)
        oneLineFailure(self, await self.mcast(1, "send", "--group", "232.1.1.1"), "SOURCE@", code=2)
        self.lab.run(1, "ip", "route", "del", "224.0.0.0/4")
        out, err, code = await self.mcast(1, "recv", "--group", "239.1.1.1", "--duration", "1")
        self.assertEqual(code, 1)
        self.assertIn(b"no route to the group", err)
        self.assertNotIn(b"Traceback", err)
        with self.assertRaises(Exception) as caught:
            await startTwistd(reactor, ["multicast", "--group", "239.1.1.1+21"], 1, prefix=self.lab.prefix(1))
        self.assertIn("igmp_max_memberships", str(caught.exception))
        with self.assertRaises(Exception) as caught:
            await startTwistd(reactor, ["multicast", "--group", "239.1.1.1"], 1, prefix=self.lab.prefix(1))
        self.assertIn("no route to the group", str(caught.exception))
