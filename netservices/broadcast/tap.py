# -*- test-case-name: tests.broadcast.test_integration -*-
"""
twistd glue for the broadcast server: C{twistd -n netservices broadcast},
a peer that logs and counts every message it receives (sender id and
address, interface, how it was addressed) and its totals on stop.
"""

from __future__ import annotations

import socket

from twisted.application import service
from twisted.logger import Logger
from twisted.python import usage

from netservices._common.authentication import keyOption
from netservices._common.listen import (
    BaseListener,
    numberOption,
    portNumber,
    positiveFloat,
    positiveInt,
)
from netservices._common.metrics import metricsOf, watchDatagramRefusals
from netservices._common.service import CallOnStop
from netservices.broadcast import wire
from netservices.broadcast.protocol import (
    DEFAULT_PORT,
    BroadcastPeer,
    InterfaceError,
    PeerSettings,
    chooseInterface,
    describeInterface,
)

maxSizeValue = numberOption(int, lambda n: wire.HEADER.size + 32 <= n <= 65507, "a size of 68-65507 bytes")
familyValue = numberOption(int, lambda n: n in (4, 6), "4 or 6")
maxAgeValue = numberOption(int, lambda n: 1 <= n <= wire.MAX_AGE_LIMIT, "1-86400 seconds")


class PeerOptions(usage.Options):
    """
    What the server and the interactive peer share.  After parsing,
    C{self["settings"]} is a L{PeerSettings} and C{self["key"]} the key or
    L{None}.
    """

    optParameters = [
        ["interface", "i", None, "Interface to use, by name (default: the only one up besides lo)."],
        ["broadcast", "b", "auto", "IPv4 addressing: limited (255.255.255.255), directed (the interface's brd address) or auto (directed if the interface has one)."],
        ["family", None, 4, "4: IPv4 broadcast; 6: the link-scope group ff02::114, joined by interface index.", familyValue],
        ["port", "p", DEFAULT_PORT, "UDP port.", portNumber],
        ["key-file", None, None, "HMAC-SHA256 key (16 bytes or more): refuse messages without a valid tag, replays and stale ones."],
        ["max-size", None, wire.DEFAULT_MAX_SIZE, "Largest datagram sent or accepted, header and tag included.", maxSizeValue],
        ["max-age", None, 30, "Seconds others may consider us present; hello every third of it.", maxAgeValue],
        ["rate", None, 10.0, "Datagrams per second accepted from one source address.", positiveFloat],
        ["burst", None, 20, "Burst of datagrams accepted from one source address.", positiveInt],
    ]

    def postOptions(self) -> None:
        if self["broadcast"] not in ("limited", "directed", "auto"):
            raise usage.UsageError("--broadcast: limited, directed or auto")
        try:
            interface = describeInterface(self["interface"] or chooseInterface())
        except InterfaceError as e:
            raise usage.UsageError(f"--interface: {e}")
        family = socket.AF_INET if self["family"] == 4 else socket.AF_INET6
        if family == socket.AF_INET and interface.address is None:
            raise usage.UsageError(f"--interface: {interface.name} has no IPv4 address (try --family 6)")
        if family == socket.AF_INET and self["broadcast"] == "directed" and not interface.broadcast:
            raise usage.UsageError(f"--broadcast directed: {interface.name} has no IPv4 broadcast address")
        self["key"] = keyOption(self["key-file"])
        self["settings"] = PeerSettings(
            interface, family, self["port"], self["broadcast"], self["max-size"],
            self["max-age"], self["rate"], float(self["burst"]),
        )


class BroadcastOptions(PeerOptions):
    """
    Options of C{twistd netservices broadcast}.
    """

    synopsis = "[--interface NAME] [options]"
    longdesc = (
        "A broadcast peer that logs and counts every message from the other"
        " peers on the link: sender id and address, interface, how it was"
        " addressed (limited, directed, multicast).  Sends with TTL 255 and"
        " refuses anything with less, from outside the interface's subnet, too"
        " big or too fast; never re-broadcasts."
    )
    optFlags = [["quiet", "q", "Count messages without a line for each."]]


class BroadcastService(BaseListener):
    """
    Runs one L{BroadcastPeer} (listening the way every service does, see
    L{BaseListener}); logs its totals when stopped.
    """

    def __init__(self, peer: BroadcastPeer, log: Logger, quiet: bool, reactor) -> None:
        settings = peer.settings
        super().__init__(
            f"broadcast peer on {settings.interface.name}, port {settings.port}", reactor
        )
        self.peer, self.log, self.quiet = peer, log, quiet
        self.counts: dict[tuple[str, str], int] = {}

    def event(self, event: dict) -> None:
        """
        Log and count one event of the peer.
        """
        if event["event"] == "message":
            key = (event["peer"], event["address"])
            self.counts[key] = self.counts.get(key, 0) + 1
            if self.quiet:
                return
            self.log.info(
                "message from peer {peer} at {address} on {interface} ({addressed} to"
                " {destination}, ttl {ttl}): {text!r}", **event,
            )
        elif not self.quiet:
            self.log.info("{event} {peer} at {address} on {interface}", **event)

    def _bind(self):
        self.peer.start()
        return self.peer.port

    def _boundPort(self, port) -> None:
        s = self.peer.settings
        self.log.info(
            "broadcast peer {peer} on {interface} port {port}, sending to {targets}",
            peer=f"{self.peer.id:016x}", interface=s.interface.name,
            port=port.getHost().port, targets=", ".join(self.peer.targets),
        )

    def _unbind(self, port) -> None:
        # Says bye, stops the timers and closes the socket.
        self.peer.stop()

    def logTotals(self) -> None:
        """
        Log the message counts per sender, the totals and the refusals.
        """
        for (peer, address), n in sorted(self.counts.items()):
            self.log.info("from peer {peer} at {address}: messages={n}", peer=peer, address=address, n=n)
        totals = dict(self.peer.totals)
        self.log.info(
            "datagrams {summary}",
            summary=" ".join(f"{k}={v}" for k, v in sorted(totals.items())) or "none",
            totals=totals,
        )
        self.peer.refusals.logTotals()


def makeService(options: BroadcastOptions, reactor=None) -> service.MultiService:
    """
    @return: the broadcast server service.
    """
    if reactor is None:
        from twisted.internet import reactor
    log = Logger(namespace="netservices.broadcast")
    if options["key"] is None:
        log.warn("no --key-file: messages are unauthenticated")
    top = service.MultiService()
    # Totals are logged after the peer stopped (services stop in reverse).
    holder: list[BroadcastService] = []
    CallOnStop(lambda: holder[0].logTotals()).setServiceParent(top)
    peer = BroadcastPeer(reactor, options["settings"], wire.Codec(options["key"]), log=log)
    server = BroadcastService(peer, log, options["quiet"], reactor)
    holder.append(server)
    peer.onEvent = server.event
    server.setServiceParent(top)
    metrics = metricsOf(options)
    metrics.counter(
        "broadcast_datagrams",
        "Datagrams by outcome: kinds delivered (hello, data...), own, duplicate,"
        " sent, send-failed.",
        lambda: peer.totals,
        ("outcome",),
    )
    metrics.gauge("broadcast_peers", "Peers present.", lambda: len(peer.table))
    watchDatagramRefusals(metrics, peer.refusals)
    top.peer = peer
    return top


__all__ = ["BroadcastOptions", "PeerOptions", "makeService"]
