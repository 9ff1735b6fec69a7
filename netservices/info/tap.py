# -*- test-case-name: tests.info.test_tap -*-
"""
twistd glue for tcp-info and udp-info.
"""

from __future__ import annotations

import attrs
from twisted.application import service
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.server import Site

from netservices._common.listen import (
    ConnectionLimitOptions,
    DatagramListenOptions,
    ListenOptions,
    errorText,
    helpText,
    nonNegativeFloat,
    parseStreamDescription,
)
from netservices._common.logs import RefusalLog
from netservices._common.ratelimit import PrefixRateLimiter
from netservices._common.service import CallOnStop, addStreamListeners, datagramService
from netservices._common.udp import DatagramPolicyOptions
from netservices.info.http import InfoResource
from netservices.info.tcp import TCPInfoFactory
from netservices.info.udp import UDPInfoProtocol

TCP_INFO_PORT = 7007
UDP_INFO_PORT = 3478


class TCPInfoOptions(ListenOptions, ConnectionLimitOptions):
    """
    Options of C{twistd netservices tcp-info}.
    """

    synopsis = "[options]"
    longdesc = (
        "Logs each TCP client's address and port, and tells the client what it"
        " saw in one line (key=value text, or JSON with --format json), then"
        " closes the connection."
    )
    defaultListen = f"tcp:{TCP_INFO_PORT}:interface=127.0.0.1"
    portTemplate = "tcp:{port}:interface=127.0.0.1"
    optParameters = [
        ["format", None, "text", "Answer format: text or json."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["http-listen"] = []

    @helpText
    def opt_http_listen(self, description: str) -> None:
        """
        Also answer over HTTP on this endpoint description (repeatable), so
        that 'curl http://HOST:PORT/' works (JSON for Accept:
        application/json).
        """
        self["http-listen"].append(description)

    def postOptions(self) -> None:
        super().postOptions()
        if self["format"] not in ("text", "json"):
            raise usage.UsageError(f"--format {self['format']!r}: expected text or json")
        self["http-endpoints"] = []
        for description in self["http-listen"]:
            try:
                endpoint = parseStreamDescription(self.getReactor(), description)
            except Exception as e:
                raise usage.UsageError(f"--http-listen {description!r}: {errorText(e)}")
            self["http-endpoints"].append(endpoint)


def makeTCPService(options: TCPInfoOptions, reactor=None) -> service.MultiService:
    """
    @return: the tcp-info service: one listener per C{--listen} and
        C{--http-listen}, under the connection limits.
    """
    reactor = reactor or options.getReactor()
    log = Logger(namespace="netservices.tcp-info")
    refusals = RefusalLog(log, reactor, "connection")
    top = service.MultiService()
    addStreamListeners(
        top,
        options["listen"],
        options["endpoints"],
        TCPInfoFactory(wantJSON=options["format"] == "json", log=log),
        options,
        reactor,
        refusals,
        lambda reason: f"error: refused: {reason}\n".encode("ascii"),
    )
    if options["http-endpoints"]:
        site = Site(InfoResource(log))
        site.noisy = False
        addStreamListeners(
            top, options["http-listen"], options["http-endpoints"], site, options, reactor, refusals
        )
    CallOnStop(refusals.logTotals).setServiceParent(top)
    return top


class UDPInfoOptions(DatagramListenOptions, DatagramPolicyOptions):
    """
    Options of C{twistd netservices udp-info}.
    """

    synopsis = "[options]"
    longdesc = (
        "Logs each datagram's source address and port and answers with what it"
        " saw, never with more bytes than the request carried (shorter requests"
        " are not answered; 'netservices info udp' pads its queries). Also"
        " answers STUN Binding Requests (RFC 8489) with XOR-MAPPED-ADDRESS."
        " Datagrams sent to broadcast or multicast addresses, from ports below"
        " 1024, 2049 or our own ports, or from impossible source addresses are"
        " refused; answers are rate-limited per source prefix."
    )
    defaultListen = f"udp:{UDP_INFO_PORT}:interface=127.0.0.1"
    portTemplate = "udp:{port}:interface=127.0.0.1"
    optParameters = [
        ["stun-rate", None, 10.0, "STUN answers per second to one source prefix.", nonNegativeFloat],
        ["stun-burst", None, 20.0, "STUN answers in a burst to one source prefix.", nonNegativeFloat],
    ]


def makeUDPService(options: UDPInfoOptions, reactor=None) -> service.MultiService:
    """
    @return: the udp-info service: one listener per C{--listen}, sharing one
        policy, and STUN answers under a rate limit of their own.
    """
    reactor = reactor or options.getReactor()
    log = Logger(namespace="netservices.udp-info")
    limits = options["rate-limits"]
    stunLimiter = PrefixRateLimiter(
        attrs.evolve(limits, rate=options["stun-rate"], burst=options["stun-burst"]),
        reactor,
    )
    return datagramService(
        options, reactor, log, lambda guard: UDPInfoProtocol(guard, stunLimiter, log)
    )
