# -*- test-case-name: tests.test_cli -*-
"""
The C{netservices} command: clients and tools for the services.

    netservices info tcp|udp|stun HOST[:PORT] [options]
"""

from __future__ import annotations

import getopt
import json
import sys

from twisted.internet.task import react
from twisted.python import usage

from netservices._common.addresses import joinHostPort, splitHostPort
from netservices._common.listen import nonNegativeInt
from netservices.info.client import InfoError, askSTUN, askTCP, askUDP
from netservices.info.tap import TCP_INFO_PORT, UDP_INFO_PORT
from netservices.info.wire import Sighting


def positiveFloat(value: str) -> float:
    """
    Coerce an option value to a finite number above 0.
    """
    number = float(value)
    if not 0 < number < float("inf"):
        raise ValueError(f"{value} is not a number above 0")
    return number


class _InfoOptions(usage.Options):
    """
    What every C{netservices info} mode takes.
    """

    defaultPort = UDP_INFO_PORT
    optFlags = [["json", None, "Print the answer as JSON, for scripts."]]
    optParameters = [
        ["timeout", None, 3.0, "Seconds to wait for an answer (for each try).", positiveFloat]
    ]

    def parseOptions(self, options=None) -> None:
        # Accept options after HOST too, as people type them.
        try:
            opts, args = getopt.gnu_getopt(options or [], self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e))
        super().parseOptions([word for pair in opts for word in pair if word] + args)

    def parseArgs(self, *args: str) -> None:
        if len(args) != 1:
            raise usage.UsageError("expected one HOST[:PORT]")
        (target,) = args
        try:
            self["host"], self["port"] = splitHostPort(target, self.defaultPort)
        except ValueError as e:
            raise usage.UsageError(str(e))


class _RetryingInfoOptions(_InfoOptions):
    optParameters = [
        ["retries", None, 2, "Tries after the first, for lost datagrams.", nonNegativeInt]
    ]


class TCPOptions(_InfoOptions):
    """
    C{netservices info tcp HOST[:PORT]}.
    """

    synopsis = f"HOST[:PORT]  (default port {TCP_INFO_PORT})"
    defaultPort = TCP_INFO_PORT
    optFlags = [["tls", None, "Connect with TLS, verifying the server's certificate."]]
    optParameters = [
        ["ca", None, None, "PEM file of the CA (or self-signed certificate) to trust with --tls; default: the system's trust store."],
        ["server-name", None, None, "Name the certificate must match (default: HOST)."],
    ]

    def run(self, reactor):
        return askTCP(
            reactor,
            self["host"],
            self["port"],
            self["timeout"],
            tls=self["tls"],
            caFile=self["ca"],
            serverName=self["server-name"],
        )


class UDPOptions(_RetryingInfoOptions):
    """
    C{netservices info udp HOST[:PORT]}.
    """

    synopsis = f"HOST[:PORT]  (default port {UDP_INFO_PORT})"

    def run(self, reactor):
        return askUDP(
            reactor, self["host"], self["port"], self["timeout"], self["retries"], self["json"]
        )


class STUNOptions(_RetryingInfoOptions):
    """
    C{netservices info stun HOST[:PORT]}.
    """

    synopsis = f"HOST[:PORT]  (default port {UDP_INFO_PORT})"

    def run(self, reactor):
        return askSTUN(reactor, self["host"], self["port"], self["timeout"], self["retries"])


class InfoOptions(usage.Options):
    """
    C{netservices info}: ask a server what it sees of us.
    """

    synopsis = "tcp|udp|stun HOST[:PORT] [options]"
    longdesc = (
        "Ask a tcp-info or udp-info server (or any STUN server) which address and"
        " port it sees us coming from."
    )
    subCommands = [
        ["tcp", None, TCPOptions, "Ask a tcp-info server (--tls for TLS)."],
        ["udp", None, UDPOptions, "Ask a udp-info server."],
        ["stun", None, STUNOptions, "Ask a STUN server (RFC 8489 Binding)."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("choose tcp, udp or stun")


class Options(usage.Options):
    """
    The C{netservices} command.
    """

    synopsis = "netservices COMMAND [options]"
    longdesc = "Clients and tools for the netservices servers (twistd netservices)."
    subCommands = [
        ["info", None, InfoOptions, "Ask tcp-info, udp-info or STUN what they see of us."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("choose a command: info")


def describe(sighting: Sighting) -> str:
    """
    @return: a sighting as one line for people.
    """
    via = f"over {sighting.transport}"
    if sighting.tls:
        via += " with TLS"
    if sighting.proxy:
        via += " through a PROXY header"
    return (
        f"{joinHostPort(sighting.ip, sighting.port)}"
        f" (as seen by {joinHostPort(sighting.localIP, sighting.localPort)} {via})"
    )


def commandName(options: usage.Options) -> str:
    """
    @return: the words of the command as typed, for error messages.
    """
    words = ["netservices"]
    while options is not None and getattr(options, "subCommand", None):
        words.append(options.subCommand)
        options = options.subOptions
    return " ".join(words)


async def _run(reactor, options: Options) -> None:
    leaf = options
    while getattr(leaf, "subOptions", None) is not None:
        leaf = leaf.subOptions
    try:
        sighting = await leaf.run(reactor)
    except InfoError as e:
        raise SystemExit(f"{commandName(options)}: {e}")
    except Exception as e:
        # A bug of ours; still one line, not a traceback, for the user.
        raise SystemExit(f"{commandName(options)}: unexpected error: {e!r}")
    if leaf["json"]:
        print(json.dumps(sighting.asDict()))
    else:
        print(describe(sighting))


def main(argv: list[str] | None = None) -> None:
    """
    Entry point of the C{netservices} console command.
    """
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"{commandName(options)}: {e} (see --help)", file=sys.stderr)
        sys.exit(2)
    react(lambda reactor: _run(reactor, options))
