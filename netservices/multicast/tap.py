# -*- test-case-name: tests.multicast.test_tap -*-
"""
twistd glue for the multicast node: C{twistd -n netservices multicast}.
"""

from __future__ import annotations

import socket

from twisted.application import service
from twisted.logger import Logger
from twisted.python import usage

from netservices._common.authentication import keyOption
from netservices._common.listen import BaseListener, helpText, portNumber
from netservices._common.metrics import metricsOf, watchDatagramRefusals
from netservices._common.multicast import (
    MulticastError,
    checkSocketLimits,
    interfaceIndex,
    listenMulticast,
)
from netservices._common.service import CallOnStop
from netservices._common.udp import DatagramGuard, DatagramPolicyOptions
from netservices.multicast import wire
from netservices.multicast.groups import DEFAULT_PORT, Group, parseGroups
from netservices.multicast.protocol import MulticastNodeProtocol, NodeState, interfaceName

GROUP_HELP = (
    "Join this group; repeatable.  [SOURCE[,SOURCE...]@]GROUP[+N][:PORT], e.g."
    " 239.1.2.3  239.1.2.3:5000  ff15::1  [ff15::1]:5000  10.0.0.1@232.1.1.1"
    " (source-specific)  239.1.2.3+4 (4 groups).  IPv6 with a port in brackets."
)


class GroupOptions(usage.Options):
    """
    C{--group}, C{--interface}, C{--port} and C{--key-file}, shared by the
    node and the tools.  After parsing, C{self["groups"]} holds
    L{Group}s, C{self["interfaces"]} C{(name, index)} pairs and
    C{self["key"]} the key or L{None}.
    """

    optParameters = [
        ["port", None, DEFAULT_PORT, "Port of groups that name none.", portNumber],
        ["key-file", None, None, "HMAC-SHA256 key (16 bytes or more) for every datagram."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["group"] = []
        self["interface"] = []

    @helpText
    def opt_group(self, text: str) -> None:
        self["group"].append(text)

    opt_group.__doc__ = GROUP_HELP

    @helpText
    def opt_interface(self, name: str) -> None:
        """
        Join (or send) on this interface, by name; repeatable.  Without it
        the routing table chooses.
        """
        self["interface"].append(name)

    def postOptions(self) -> None:
        if not self["group"]:
            raise usage.UsageError("give at least one --group")
        groups: list[Group] = []
        for text in self["group"]:
            try:
                groups.extend(parseGroups(text, self["port"] or DEFAULT_PORT))
            except ValueError as e:
                raise usage.UsageError(f"--group: {e}")
        self["groups"] = list(dict.fromkeys(groups))
        try:
            self["interfaces"] = [(n, interfaceIndex(n)) for n in self["interface"]]
        except MulticastError as e:
            raise usage.UsageError(f"--interface: {e}")
        self["key"] = keyOption(self["key-file"])
        super().postOptions()

    def sockets(self) -> dict[tuple[int, int], list[Group]]:
        """
        @return: the groups by socket: C{(family, port)}.
        """
        bySocket: dict[tuple[int, int], list[Group]] = {}
        for group in self["groups"]:
            family = socket.AF_INET if group.version == 4 else socket.AF_INET6
            bySocket.setdefault((family, group.port), []).append(group)
        return bySocket

    def checkLimits(self) -> None:
        """
        Fail now, naming the sysctl, if one socket would need more joins
        than the kernel allows.

        @raise usage.UsageError: if so.
        """
        perGroup = max(1, len(self["interfaces"]))
        for (family, _), groups in self.sockets().items():
            try:
                checkSocketLimits(
                    family,
                    sum(max(1, len(g.sources)) for g in groups) * perGroup,
                    max(len(g.sources) for g in groups),
                )
            except MulticastError as e:
                raise usage.UsageError(str(e))


class MulticastOptions(GroupOptions, DatagramPolicyOptions):
    """
    Options of C{twistd netservices multicast}.
    """

    synopsis = "--group GROUP [--group ...] [options]"
    longdesc = (
        "A multicast node: joins the --groups (IPv4 and IPv6, any-source or"
        " source-specific) and logs and counts every datagram that arrives:"
        " sender, group, port, interface, TTL / hop limit, size.  Answers the"
        " probes of 'netservices mcast ping' by unicast, never with more bytes"
        " than the probe, within --rate/--burst per source prefix."
    )
    optFlags = [["quiet", "q", "Count datagrams without a line for each."]]

    def postOptions(self) -> None:
        super().postOptions()
        self.checkLimits()


class MulticastListener(BaseListener):
    """
    One socket of the node: binds the wildcard address of its family on
    its port, then joins its groups on each interface.
    """

    def __init__(self, reactor, family, port, groups, interfaces, protocol, log, onListening) -> None:
        name = "IPv4" if family == socket.AF_INET else "IPv6"
        super().__init__(f"{name} groups on port {port}", reactor)
        self.family, self.portNumber, self.groups = family, port, groups
        self.interfaces, self.protocol, self.log = interfaces, protocol, log
        self.onListening = onListening

    def _bind(self):
        port = listenMulticast(self.reactor, self.portNumber, self.protocol, self.family)
        try:
            for group in self.groups:
                for name, index in self.interfaces or [("", 0)]:
                    port.join(group.address, index, group.sources)
                    self.log.info(
                        "joined {group} on {interface}",
                        group=str(group),
                        interface=name or "the routed interface",
                    )
        except MulticastError:
            port.stopListening()
            raise
        return port

    def _boundPort(self, port) -> None:
        self.onListening(port.getHost().port)


def makeService(options: MulticastOptions, reactor=None) -> service.MultiService:
    """
    @return: the multicast node service.
    """
    if reactor is None:
        from twisted.internet import reactor
    log = Logger(namespace="netservices.multicast")
    guard = DatagramGuard(options["rate-limits"], reactor, log)
    state = NodeState(guard, wire.Codec(options["key"]), log, options["quiet"])
    top = service.MultiService()
    if options["key"] is None:
        log.warn("no --key-file: datagrams are unauthenticated")
    for (family, port), groups in options.sockets().items():
        MulticastListener(
            reactor, family, port, groups, options["interfaces"],
            MulticastNodeProtocol(state, port), log, guard.ownPorts.add,
        ).setServiceParent(top)
    CallOnStop(state.logTotals).setServiceParent(top)
    watchNode(metricsOf(options), state)
    top.state = state
    return top


def perGroup(state: NodeState, field: int) -> dict[tuple[str, str], int]:
    """
    @return: datagrams (C{field} 0) or bytes (1) received, summed over the
        sources, by C{(group, port)}: a label set bounded by the groups
        joined, not by the senders.
    """
    totals: dict[tuple[str, str], int] = {}
    for (_, group, port), counts in state.counts.items():
        key = (group, str(port))
        totals[key] = totals.get(key, 0) + counts[field]
    return totals


def watchNode(metrics, state: NodeState) -> None:
    """
    Add the node's metrics: datagrams and bytes received and lost per
    group, datagrams by kind, refusals.
    """
    metrics.counter(
        "multicast_datagrams_received",
        "Datagrams received, by destination group and port.",
        lambda: perGroup(state, 0),
        ("group", "port"),
    )
    metrics.counter(
        "multicast_bytes_received",
        "Bytes received, by destination group and port.",
        lambda: perGroup(state, 1),
        ("group", "port"),
    )
    metrics.gauge(
        "multicast_datagrams_lost",
        "Datagrams missing from the senders' sequence numbers, by group and"
        " port (lower when late ones arrive).",
        state.lostByGroup,
        ("group", "port"),
    )
    metrics.counter(
        "multicast_datagrams",
        "Datagrams by kind (data, final, probe, foreign...) and probe replies"
        " sent (replies).",
        lambda: state.totals,
        ("kind",),
    )
    watchDatagramRefusals(metrics, state.guard.refusals)


__all__ = ["MulticastOptions", "makeService", "interfaceName"]
