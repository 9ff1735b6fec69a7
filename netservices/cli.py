# -*- test-case-name: tests.test_cli -*-
"""
The C{netservices} command: clients and tools for the services.

    netservices info tcp|udp|stun HOST[:PORT] [options]
    netservices echo tcp|udp HOST[:PORT] [MESSAGE...] [options]
    netservices mcast send|recv|ping --group GROUP [options]
    netservices broadcast [--interface NAME] [--send TEXT | --peers] [options]
    netservices wol MAC [--interface NAME]
    netservices threaded HOST[:PORT] HANDLER [ARG...] [options]
    netservices chat-admin [--data-dir DIR | --cluster URL] user|oper|channel|setting ...
    netservices chat-client [ircs://|irc://]HOST[:PORT] --nick NICK [options]
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet.task import react
from twisted.python import usage

from netservices._common.addresses import joinHostPort, splitHostPort
from netservices._common.client import ClientError, InterspersedOptions, untilInterrupted
from netservices._common.listen import (
    nonNegativeFloat,
    numberOption,
    positiveFloat,
    positiveInt,
)
from netservices.echo.client import (
    DEFAULT_COUNT,
    DEFAULT_SIZE,
    HEADER,
    MAX_TCP_MESSAGE,
    MAX_TRIES,
    MAX_UDP_MESSAGE,
    EchoError,
    LineReader,
    describeEvent,
    describeSummary,
    echoTCP,
    echoUDP,
    generatedMessages,
    summaryEvent,
)
from netservices.echo.tap import ECHO_PORT
from netservices.info.client import askSTUN, askTCP, askUDP
from netservices.info.tap import TCP_INFO_PORT, UDP_INFO_PORT
from netservices.info.wire import Sighting
from netservices.broadcast.client import BroadcastClientOptions
from netservices.chat.admin import ChatAdminOptions
from netservices.chat.client import ChatClientOptions
from netservices.broadcast.wol import WolOptions
from netservices.multicast.client import McastOptions
from netservices.threaded.client import describeLoad, loadRun, requestOnce
from netservices.threaded.tap import THREADED_PORT
from netservices.threaded.wire import OK as THREADED_OK
from netservices.threaded.wire import isValidName


#: Retries: at least 0, where 0 means none (not "no limit").
retryCount = numberOption(int, lambda n: n >= 0, "an integer of at least 0")


class _ClientOptions(InterspersedOptions):
    """
    What every client mode takes: C{HOST[:PORT]}, with options before or
    after it.
    """

    defaultPort: int
    # Not the docstring of __main__, which usage.Options shows otherwise.
    longdesc = ""

    def parseTarget(self, target: str) -> None:
        """
        Set C{host} and C{port} from a C{HOST[:PORT]} argument.
        """
        try:
            self["host"], self["port"] = splitHostPort(target, self.defaultPort)
        except ValueError as e:
            raise usage.UsageError(str(e))


class _TLSOptions(usage.Options):
    """
    TLS for the TCP clients.
    """

    optFlags = [["tls", None, "Connect with TLS, verifying the server's certificate."]]
    optParameters = [
        ["ca", None, None, "PEM file of the CA (or self-signed certificate) to trust with --tls; default: the system's trust store."],
        ["server-name", None, None, "Name the certificate must match (default: HOST)."],
    ]


class _InfoOptions(_ClientOptions):
    """
    What every C{netservices info} mode takes.
    """

    defaultPort = UDP_INFO_PORT
    optFlags = [["json", None, "Print the answer as JSON, for scripts."]]
    optParameters = [
        ["timeout", None, 3.0, "Seconds to wait for an answer (for each try).", positiveFloat]
    ]

    def parseArgs(self, *args: str) -> None:
        if len(args) != 1:
            raise usage.UsageError("expected one HOST[:PORT]")
        self.parseTarget(args[0])

    async def run(self, reactor) -> None:
        """
        Ask, and print the answer.
        """
        sighting = await self.ask(reactor)
        if self["json"]:
            print(json.dumps(sighting.asDict()))
        else:
            print(describe(sighting))


class _RetryingInfoOptions(_InfoOptions):
    optParameters = [
        ["retries", None, 2, "Tries after the first, for lost datagrams.", retryCount]
    ]


class TCPOptions(_InfoOptions, _TLSOptions):
    """
    C{netservices info tcp HOST[:PORT]}.
    """

    synopsis = f"HOST[:PORT]  (default port {TCP_INFO_PORT})"
    defaultPort = TCP_INFO_PORT

    def ask(self, reactor):
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

    def ask(self, reactor):
        return askUDP(
            reactor, self["host"], self["port"], self["timeout"], self["retries"], self["json"]
        )


class STUNOptions(_RetryingInfoOptions):
    """
    C{netservices info stun HOST[:PORT]}.
    """

    synopsis = f"HOST[:PORT]  (default port {UDP_INFO_PORT})"

    def ask(self, reactor):
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


class _EchoOptions(_ClientOptions):
    """
    What C{netservices echo tcp} and C{udp} take.

    @cvar transport: C{"tcp"} or C{"udp"}.
    @cvar maxMessage: the longest message, in bytes.
    @cvar tooLong: why longer messages are refused.
    """

    transport: str
    maxMessage: int
    tooLong: str
    defaultPort = ECHO_PORT
    synopsis = f"HOST[:PORT] [MESSAGE...]  (default port {ECHO_PORT})"
    longdesc = (
        "Send the MESSAGEs, the lines of --stdin, or --count generated messages of"
        " --size bytes, one at a time; check that every byte comes back and time"
        " each round trip.  Exit status: 0 when everything came back intact, 1"
        " when anything was lost, corrupted or duplicated, or on errors, 2 for bad"
        " usage.  Put MESSAGEs that start with - after --."
    )
    optFlags = [
        ["stdin", None, "Send each line of standard input (with its line ending) as one message."],
        ["json", None, "Print one JSON object per echo and one for the summary, for scripts."],
        ["quiet", "q", "Print only the summary."],
    ]
    optParameters = [
        ["count", "c", None, f"Messages to generate (default {DEFAULT_COUNT})", positiveInt],
        [
            "size",
            "s",
            None,
            f"Bytes in each generated message (default {DEFAULT_SIZE})",
            positiveInt,
        ],
        [
            "interval",
            "i",
            1.0,
            "Seconds between sends; 0 sends each message as soon as the last one is back.",
            nonNegativeFloat,
        ],
    ]

    def parseArgs(self, *args: str) -> None:
        if not args:
            raise usage.UsageError("expected HOST[:PORT]")
        self.parseTarget(args[0])
        # The bytes as typed, even if they are not valid in the locale.
        self["messages"] = [os.fsencode(message) for message in args[1:]]

    def postOptions(self) -> None:
        generated = self["count"] is not None or self["size"] is not None
        if sum([bool(self["messages"]), self["stdin"], generated]) > 1:
            raise usage.UsageError("give MESSAGEs, --stdin or --count/--size: only one of them")
        if any(not message for message in self["messages"]):
            raise usage.UsageError("empty MESSAGE: there would be nothing to echo")
        longest = max([len(m) for m in self["messages"]] + [self["size"] or 0])
        if longest > self.maxMessage:
            raise usage.UsageError(
                f"a message of {longest:,} bytes is too long: at most"
                f" {self.maxMessage:,} {self.tooLong}"
            )

    def messages(self, reactor):
        """
        @return: the messages to send, as the client takes them.
        """
        if self["messages"]:
            return self["messages"]
        if self["stdin"]:
            # Descriptor 0, whatever sys.stdin has been replaced with.
            return LineReader(reactor, 0, self.maxMessage)
        return generatedMessages(self["count"] or DEFAULT_COUNT, self["size"] or DEFAULT_SIZE)

    #: Events reported so far.
    reported = 0

    def report(self, event: dict) -> None:
        """
        Print an echo, or a message given up, as it happens.
        """
        self.reported += 1
        if not self["quiet"]:
            print(json.dumps(event) if self["json"] else describeEvent(event), flush=True)

    def summarise(self, statistics) -> None:
        """
        Print the summary of a run.
        """
        target = joinHostPort(self["host"], self["port"])
        summary = summaryEvent(statistics, self.transport, target)
        if self["json"]:
            print(json.dumps(summary), flush=True)
        else:
            if self.reported and not self["quiet"]:
                print()
            print(describeSummary(summary), flush=True)

    async def run(self, reactor) -> int:
        """
        Echo, and print the summary, also when interrupted (Ctrl-C).

        @return: the exit status: 0 when everything came back intact, once.
        """
        return await untilInterrupted(reactor, self._echoAndSummarise(reactor))

    async def _echoAndSummarise(self, reactor) -> int:
        try:
            statistics = await self.echo(reactor)
        except EchoError as e:
            # A failure at the first message (no server, say) is one line;
            # after echoes, they are summed up first.
            if e.statistics is not None and self.reported:
                self.summarise(e.statistics)
            raise
        self.summarise(statistics)
        return 0 if statistics.ok else 1


class EchoTCPOptions(_EchoOptions, _TLSOptions):
    """
    C{netservices echo tcp HOST[:PORT] [MESSAGE...]}.
    """

    transport = "tcp"
    maxMessage = MAX_TCP_MESSAGE
    tooLong = "bytes"
    optParameters = [
        ["timeout", None, 5.0, "Seconds to connect, and to wait for each echo.", positiveFloat]
    ]

    def echo(self, reactor):
        return echoTCP(
            reactor,
            self["host"],
            self["port"],
            self.messages(reactor),
            timeout=self["timeout"],
            interval=self["interval"],
            tls=self["tls"],
            caFile=self["ca"],
            serverName=self["server-name"],
            report=self.report,
        )


class EchoUDPOptions(_EchoOptions):
    """
    C{netservices echo udp HOST[:PORT] [MESSAGE...]}.
    """

    transport = "udp"
    maxMessage = MAX_UDP_MESSAGE
    tooLong = f"bytes fit in one datagram with the {HEADER.size}-byte header"
    optParameters = [
        ["timeout", None, 1.0, "Seconds to wait for the echo of each try.", positiveFloat],
        [
            "retries",
            None,
            2,
            "Tries after the first, for each message whose echo is lost.",
            retryCount,
        ],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["retries"] >= MAX_TRIES:
            raise usage.UsageError(f"--retries {self['retries']}: at most {MAX_TRIES - 1}")

    def echo(self, reactor):
        return echoUDP(
            reactor,
            self["host"],
            self["port"],
            self.messages(reactor),
            timeout=self["timeout"],
            retries=self["retries"],
            interval=self["interval"],
            report=self.report,
        )


class EchoOptions(usage.Options):
    """
    C{netservices echo}: send messages to an echo server and time them.
    """

    synopsis = "tcp|udp HOST[:PORT] [MESSAGE...] [options]"
    longdesc = (
        "Send messages to a tcp-echo or udp-echo server (or any RFC 862 echo"
        " server, over TCP), check what comes back and time the round trips,"
        " as ping does."
    )
    subCommands = [
        ["tcp", None, EchoTCPOptions, "Echo over TCP (--tls for TLS)."],
        ["udp", None, EchoUDPOptions, "Echo over UDP, with retries."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("choose tcp or udp")


#: Connections of a load run: bounded by what one process can open.
loadConcurrency = numberOption(int, lambda n: 1 <= n <= 10000, "an integer from 1 to 10000")


class ThreadedClientOptions(_ClientOptions, _TLSOptions):
    """
    C{netservices threaded HOST[:PORT] HANDLER [ARG...]}.
    """

    defaultPort = THREADED_PORT
    synopsis = f"HOST[:PORT] HANDLER [ARG...]  (default port {THREADED_PORT})"
    longdesc = (
        "Send one request to a threaded server and print the reply's text; exit"
        " status 1 when the reply is ERROR, BUSY or TIMEOUT. With --concurrency"
        " or --count, a load run: that many connections each send the request"
        " again as soon as its reply is in, until --count replies are in; prints"
        " throughput, latency percentiles and replies by kind (exit status 1 if"
        " any reply was not OK). Put ARGs that start with - after --."
    )
    optFlags = [["json", None, "Print the reply (or the load summary) as JSON, for scripts."]]
    optParameters = [
        ["timeout", None, 60.0, "Seconds to connect, and to wait for each reply.", positiveFloat],
        [
            "concurrency",
            None,
            None,
            "Load run: connections, one request in flight on each (default 10).",
            loadConcurrency,
        ],
        ["count", None, None, "Load run: requests in all (default 100).", positiveInt],
    ]

    def parseArgs(self, *args: str) -> None:
        if len(args) < 2:
            raise usage.UsageError("expected HOST[:PORT] HANDLER [ARG...]")
        self.parseTarget(args[0])
        self["handler"] = args[1]
        if not isValidName(self["handler"]):
            raise usage.UsageError(f"{args[1]!r} is not a handler name")
        for arg in args[2:]:
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:
                raise usage.UsageError(f"argument {arg!r} is not valid text in this locale")
        self["args"] = args[2:]

    async def run(self, reactor) -> int:
        """
        Send the request (or the load run), and print what came back.

        @return: the exit status.
        """
        connection = dict(
            timeout=self["timeout"],
            tls=self["tls"],
            caFile=self["ca"],
            serverName=self["server-name"],
        )
        if self["concurrency"] is not None or self["count"] is not None:
            result = await loadRun(
                reactor,
                self["host"],
                self["port"],
                self["handler"],
                self["args"],
                concurrency=self["concurrency"] or 10,
                count=self["count"] or 100,
                **connection,
            )
            summary = result.asDict()
            print(json.dumps(summary) if self["json"] else describeLoad(summary), flush=True)
            return 0 if result.ok else 1
        reply, rtt = await requestOnce(
            reactor, self["host"], self["port"], self["handler"], self["args"], **connection
        )
        if self["json"]:
            print(
                json.dumps(
                    {
                        "id": reply.id,
                        "kind": reply.kind,
                        "text": reply.text,
                        "time_ms": round(rtt * 1000, 3),
                    }
                ),
                flush=True,
            )
            return 0 if reply.kind == THREADED_OK else 1
        if reply.kind != THREADED_OK:
            where = joinHostPort(self["host"], self["port"])
            raise ClientError(f"{where}: {reply.kind} {reply.text}".rstrip())
        print(reply.text, flush=True)
        return 0


class Options(usage.Options):
    """
    The C{netservices} command.
    """

    synopsis = "netservices COMMAND [options]"
    longdesc = "Clients and tools for the netservices servers (twistd netservices)."
    subCommands = [
        ["info", None, InfoOptions, "Ask tcp-info, udp-info or STUN what they see of us."],
        ["echo", None, EchoOptions, "Time messages through tcp-echo or udp-echo."],
        ["mcast", None, McastOptions, "Send, receive and ping multicast groups."],
        ["broadcast", None, BroadcastClientOptions, "Talk with the broadcast peers on the link."],
        ["wol", None, WolOptions, "Send a Wake-on-LAN magic packet."],
        ["threaded", None, ThreadedClientOptions, "Send requests to a threaded server, or load it."],
        ["chat-admin", None, ChatAdminOptions, "Manage chat accounts, IRC operators, registered channels."],
        ["chat-client", None, ChatClientOptions, "Chat on an IRC server, or send and listen from scripts."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError(
                "choose a command: info, echo, mcast, broadcast, wol, threaded, chat-admin"
                " or chat-client"
            )


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
        status = await leaf.run(reactor)
    except ClientError as e:
        raise SystemExit(f"{commandName(options)}: {e}")
    except Exception as e:
        # A bug of ours; still one line, not a traceback, for the user.
        raise SystemExit(f"{commandName(options)}: unexpected error: {e!r}")
    if status:
        raise SystemExit(status)


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
