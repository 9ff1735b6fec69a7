# -*- test-case-name: tests.echo.test_tap -*-
"""
twistd glue for tcp-echo and udp-echo.
"""

from __future__ import annotations

from twisted.application import service
from twisted.logger import Logger

from netservices._common.listen import (
    ConnectionLimitOptions,
    DatagramListenOptions,
    ListenOptions,
)
from netservices._common.logs import RefusalLog
from netservices._common.metrics import metricsOf
from netservices._common.service import CallOnStop, addStreamListeners, datagramService
from netservices._common.udp import DatagramPolicyOptions
from netservices.echo.tcp import TCPEchoFactory
from netservices.echo.udp import UDPEchoProtocol

ECHO_PORT = 7777


class TCPEchoOptions(ListenOptions, ConnectionLimitOptions):
    """
    Options of C{twistd netservices tcp-echo}.
    """

    synopsis = "[options]"
    longdesc = (
        "RFC 862 echo over TCP: every byte back, in order. A client that sends"
        " without reading is not read from until it reads (bounded memory);"
        " TCP_NODELAY on every connection."
    )
    defaultListen = f"tcp:{ECHO_PORT}:interface=127.0.0.1"
    portTemplate = "tcp:{port}:interface=127.0.0.1"
    eagerWrites = True


def makeTCPService(options: TCPEchoOptions, reactor=None) -> service.MultiService:
    """
    @return: the tcp-echo service.
    """
    reactor = reactor or options.getReactor()
    log = Logger(namespace="netservices.tcp-echo")
    refusals = RefusalLog(log, reactor, "connection")
    factory = TCPEchoFactory(log)
    top = service.MultiService()
    addStreamListeners(
        top, options["listen"], options["endpoints"], factory, options, reactor, refusals
    )

    def logTotals() -> None:
        log.info(
            "connections={connections} bytes echoed={bytes}", **factory.counts
        )
        refusals.logTotals()

    CallOnStop(logTotals).setServiceParent(top)
    metrics = metricsOf(options)
    # Echo sends what it receives: one counter, read twice.
    metrics.counter("bytes_received", "Bytes received.", lambda: factory.counts["bytes"])
    metrics.counter("bytes_sent", "Bytes sent.", lambda: factory.counts["bytes"])
    return top


class UDPEchoOptions(DatagramListenOptions, DatagramPolicyOptions):
    """
    Options of C{twistd netservices udp-echo}.
    """

    synopsis = "[options]"
    longdesc = (
        "RFC 862 echo over UDP: each datagram back to its sender, byte for byte"
        " (up to 65,507 bytes). Datagrams sent to broadcast or multicast"
        " addresses, from ports below 1024, 2049 or our own ports, or from"
        " impossible source addresses are refused; answers are rate-limited per"
        " source prefix, so two echo servers tricked into echoing each other"
        " stop within two bursts."
    )
    defaultListen = f"udp:{ECHO_PORT}:interface=127.0.0.1"
    portTemplate = "udp:{port}:interface=127.0.0.1"


def makeUDPService(options: UDPEchoOptions, reactor=None) -> service.MultiService:
    """
    @return: the udp-echo service.
    """
    reactor = reactor or options.getReactor()
    log = Logger(namespace="netservices.udp-echo")
    return datagramService(options, reactor, log, UDPEchoProtocol)
