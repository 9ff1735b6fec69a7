"""
End to end: C{twistd -n netservices broadcast} and C{netservices
broadcast|wol} as child processes inside the hosts of a namespace LAN.
"""

from __future__ import annotations

import json
import os

from twisted.internet import reactor

from netservices.testing import (
    NetworkLab,
    TwistdTestCase,
    _OutputCollector,
    _spawn,
    eventText,
    netservicesCommand,
    oneLineFailure,
    runProcess,
)
from tests.broadcast.test_lab import NO_LAB


class EndToEndTests(TwistdTestCase):
    """
    The server and the client in a 3-host lab.
    """

    skip = NO_LAB

    def setUp(self) -> None:
        self.lab = NetworkLab(3, subnet="10.233.0", name=f"be{os.getpid()}")
        self.addCleanup(self.lab.remove)
        self.lab.create()

    def command(self, host: int, *args: str):
        return runProcess(reactor, [*self.lab.prefix(host), *netservicesCommand(list(args))])

    async def test_serverLogsClientMessages(self) -> None:
        """
        The server on host 3 logs a C{--send} from host 1 (which has no
        routes) with sender id, address, interface and addressing, and its
        totals on stop; C{--peers} from host 2 lists the server (it
        answered the hello by unicast); bad usage is one line, status 2.
        """
        lab = self.lab
        lab.run(1, "ip", "route", "flush", "table", "main")
        server = await self.startServer(["broadcast", "--interface", "eth0"], 1, prefix=lab.prefix(3))
        out, err, code = await self.command(1, "broadcast", "--interface", "eth0", "--broadcast", "limited",
                                            "--send", "hello there", "--json")
        self.assertEqual(code, 0, err)
        [sent] = [e for e in map(json.loads, out.decode().splitlines()) if e["event"] == "sent"]
        event = await server.waitForEvent(lambda e: "message from peer" in eventText(e))
        self.assertEqual(
            (event["peer"], event["address"], event["interface"], event["addressed"], event["text"]),
            (sent["peer"], lab.address(1), "eth0", "limited", "hello there"),
        )
        out, err, code = await self.command(2, "broadcast", "--peers", "--json", "--wait", "0.5")
        self.assertEqual(code, 0, err)
        [table] = [e for e in map(json.loads, out.decode().splitlines()) if e["event"] == "peers"]
        self.assertEqual([row["address"] for row in table["peers"]], [lab.address(3)])
        await server.stop()
        [totals] = server.eventsMatching(lambda e: "totals" in e)
        self.assertEqual(totals["totals"]["data"], 1)
        oneLineFailure(self, await self.command(1, "broadcast", "--broadcast", "sideways"), "limited, directed or auto", code=2)
        oneLineFailure(self, await self.command(1, "wol", "nonsense"), "not a MAC", code=2)

    async def test_interactive(self) -> None:
        """
        The interactive peer on host 1 broadcasts each line of its standard
        input; at its end it says bye and exits 0; the server logs both
        lines in order, then the bye.
        """
        server = await self.startServer(["broadcast", "--interface", "eth0"], 1, prefix=self.lab.prefix(3))
        argv = [*self.lab.prefix(1), *netservicesCommand(["broadcast", "--interface", "eth0"])]
        client = _OutputCollector(reactor, argv)
        client.directory = _spawn(reactor, client, argv, None)
        client.transport.write(b"first line\nsecond line\n")
        client.transport.closeStdin()
        self.assertEqual(await client.whenEnded(), 0, client.stderr)
        await server.waitForEvent(lambda e: eventText(e).startswith("peer-down"))
        texts = [e["text"] for e in server.eventsMatching(lambda e: "message from peer" in eventText(e))]
        self.assertEqual(texts, ["first line", "second line"])
        await server.stop()

    async def test_wol(self) -> None:
        """
        C{netservices wol} from host 1 (no routes) reaches a socket on host
        2 with the exact magic packet, sent to 255.255.255.255.
        """
        import socket

        self.lab.run(1, "ip", "route", "flush", "table", "main")
        with self.lab.inside(2):
            listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(listener.close)
            listener.bind(("", 9))
        out, err, code = await self.command(1, "wol", "52:54:00:12:34:56", "--interface", "eth0")
        self.assertEqual(code, 0, err)
        self.assertIn(b"102 bytes", out)
        listener.settimeout(5)
        data, source = listener.recvfrom(2048)
        self.assertEqual(data, b"\xff" * 6 + bytes.fromhex("525400123456") * 16)
        self.assertEqual(source[0], self.lab.address(1))
