# -*- test-case-name: tests.broadcast.test_client -*-
"""
C{netservices broadcast}: the interactive peer.  Each line read from
standard input is broadcast; every message from other peers is printed with
its sender (C{--json}: one JSON object per event).  C{--send TEXT} sends one
message and exits; C{--peers} listens for C{--wait} seconds and prints the
table of peers seen.  A C{hello} is sent on start and a C{bye} on exit.
"""

from __future__ import annotations

import json
import sys

from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python import usage

from netservices._common.client import ClientError
from netservices._common.listen import errorText, positiveFloat
from netservices.broadcast import wire
from netservices.broadcast.protocol import BroadcastPeer, InterfaceError
from netservices.broadcast.tap import PeerOptions


def describeEvent(event: dict) -> str | None:
    """
    @return: an event as one line for people, or L{None} to print nothing.
    """
    kind = event["event"]
    if kind == "message":
        return f"[{event['peer']} {event['address']}] {event['text']}"
    if kind == "peer-up":
        return f"* {event['peer']} at {event['address']} is here (max-age {event['max_age']} s)"
    if kind == "peer-down":
        return f"* {event['peer']} at {event['address']} left ({event['reason']})"
    return None


def describePeers(rows: list[dict]) -> str:
    """
    @return: the peer table for people.
    """
    lines = [f"{'peer':<16}  {'address':<26} {'interface':<10} {'last seen s':>11} {'max-age':>7} {'messages':>8}"]
    for r in rows:
        lines.append(
            f"{r['peer']:<16}  {r['address']:<26} {r['interface']:<10} {r['last_seen_s']:>11.3f}"
            f" {r['max_age']:>7} {r['messages']:>8}"
        )
    return "\n".join(lines)


class _Lines(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 65536

    def __init__(self, line, ended: Deferred) -> None:
        self.line, self.ended = line, ended

    def lineReceived(self, line: bytes) -> None:
        self.line(line.rstrip(b"\r").decode("utf-8", "replace"))

    def connectionLost(self, reason=None) -> None:
        if not self.ended.called:
            self.ended.callback(None)


class BroadcastClientOptions(PeerOptions):
    """
    C{netservices broadcast}.
    """

    synopsis = "[--interface NAME] [--send TEXT | --peers] [options]"
    longdesc = (
        "A broadcast peer: each line typed is broadcast on the link, and every"
        " message from other peers is printed with its sender.  Announces"
        " itself with hello (and a max-age) and bye on exit.  Exit status 1 if"
        " sending fails, 2 for bad usage."
    )
    optFlags = [
        ["json", None, "Print one JSON object per event (NDJSON), for scripts."],
        ["peers", None, "Say hello, listen for --wait seconds, print the peers seen and exit."],
    ]
    optParameters = [
        ["send", None, None, "Broadcast this one message and exit."],
        ["wait", "w", 1.0, "Seconds --peers listens (others answer a hello within 120 ms).", positiveFloat],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["send"] is not None and self["peers"]:
            raise usage.UsageError("--send and --peers: choose one")
        if self["send"] is not None:
            size = len(self["send"].encode("utf-8")) + wire.overhead(self["key"])
            if size > self["max-size"]:
                raise usage.UsageError(f"--send: {size} bytes with the header, more than --max-size {self['max-size']}")

    def print(self, event: dict) -> None:
        """
        Print an event: as JSON with C{--json}, else as text (if any).
        """
        if self["json"]:
            print(json.dumps(event), flush=True)
        else:
            text = describeEvent(event)
            if text is not None:
                print(text, flush=True)

    def sendLine(self, peer: BroadcastPeer, text: str) -> None:
        """
        Broadcast one line, or say on stderr why not.
        """
        try:
            if not peer.send(text):
                print("sending failed (see the refusal log)", file=sys.stderr, flush=True)
        except ValueError as e:
            print(f"not sent: {e}", file=sys.stderr, flush=True)

    async def run(self, reactor) -> int:
        if self["key"] is None and not self["json"]:
            print("no --key-file: messages are unauthenticated", file=sys.stderr, flush=True)
        peer = BroadcastPeer(reactor, self["settings"], wire.Codec(self["key"]), self.print)
        try:
            peer.start()
        except CannotListenError as e:
            raise ClientError(f"cannot listen on port {self['port']}: {errorText(e)}")
        except (OSError, InterfaceError) as e:
            raise ClientError(errorText(e))
        try:
            if self["send"] is not None:
                sent = peer.send(self["send"])
                if not sent:
                    raise ClientError(f"cannot send on {self['settings'].interface.name}: {peer.lastSendError}")
                if self["json"]:
                    self.print({"event": "sent", "peer": f"{peer.id:016x}", "sequence": peer.sequence - 1,
                                "to": peer.targets, "text": self["send"]})
                return 0
            if self["peers"]:
                await deferLater(reactor, self["wait"], lambda: None)
                rows = peer.peers()
                if self["json"]:
                    print(json.dumps({"event": "peers", "peers": rows}), flush=True)
                else:
                    print(describePeers(rows), flush=True)
                return 0
            from twisted.internet.stdio import StandardIO

            ended: Deferred = Deferred()
            stdio = StandardIO(_Lines(lambda line: self.sendLine(peer, line), ended), reactor=reactor)
            try:
                await ended
            finally:
                stdio.loseConnection()
            return 0
        finally:
            peer.stop()
