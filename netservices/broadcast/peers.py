# -*- test-case-name: tests.broadcast.test_peers -*-
"""
The peer table: pure logic, no sockets and no clock of its own.

Every message passes L{PeerTable.receive}, which says what to do with it:
drop it because it is our own (broadcast always loops back to the sending
host, whatever C{IP_MULTICAST_LOOP} says), drop it as a duplicate (the same
peer id and sequence number seen before: sent to both limited and directed
broadcast, or arriving on several interfaces), or deliver it.  Peers are
remembered with their max-age and expire when it passes without news; the
table and the duplicate memory are bounded.
"""

from __future__ import annotations

import attrs

from netservices._common.authentication import SequenceWindow
from netservices.broadcast import wire

OWN, DUPLICATE, NEW_PEER, KNOWN_PEER = "own", "duplicate", "new-peer", "known-peer"


@attrs.define
class Peer:
    """
    One peer seen.

    @ivar id: its random peer id.
    @ivar address: the source address it last sent from.
    @ivar interface: the interface it was last heard on.
    @ivar firstSeen / lastSeen: times, in seconds.
    @ivar maxAge: seconds from C{lastSeen} it is considered present.
    @ivar messages: data messages received from it.
    """

    id: int
    address: str
    interface: str
    firstSeen: float
    lastSeen: float
    maxAge: int
    messages: int = 0

    def expiresAt(self) -> float:
        """
        @return: when this peer is forgotten without news.
        """
        return self.lastSeen + self.maxAge

    def describe(self, now: float) -> dict:
        """
        @return: JSON-ready.
        """
        return {
            "peer": f"{self.id:016x}",
            "address": self.address,
            "interface": self.interface,
            "last_seen_s": round(now - self.lastSeen, 3),
            "max_age": self.maxAge,
            "messages": self.messages,
        }


class PeerTable:
    """
    The peers seen, by id, at most C{maxPeers} (the least recently heard is
    forgotten first), and the duplicate memory: a L{SequenceWindow} per
    peer id.
    """

    def __init__(self, ownId: int, maxPeers: int = 1024, window: int = 1024) -> None:
        self.ownId = ownId
        self.maxPeers = maxPeers
        self.peers: dict[int, Peer] = {}
        self.seen = SequenceWindow(window, maxStreams=maxPeers)

    def __len__(self) -> int:
        return len(self.peers)

    def receive(self, message: wire.Message, address: str, interface: str, now: float) -> str:
        """
        Account for C{message} from C{address}.

        @return: L{OWN} or L{DUPLICATE} (drop it), L{NEW_PEER} (deliver it;
            the sender was not in the table) or L{KNOWN_PEER} (deliver it).
        """
        if message.peer == self.ownId:
            return OWN
        if not self.seen.acceptSequence(message.peer, message.sequence):
            return DUPLICATE
        peer = self.peers.pop(message.peer, None)
        if message.kind == wire.BYE:
            # The duplicate memory stays (bounded): a second copy of the
            # bye is still a duplicate.
            return KNOWN_PEER if peer is not None else NEW_PEER
        outcome = KNOWN_PEER
        if peer is None:
            outcome = NEW_PEER
            while len(self.peers) >= self.maxPeers:
                del self.peers[next(iter(self.peers))]
            peer = Peer(message.peer, address, interface, now, now, message.maxAge)
        peer.address, peer.interface = address, interface
        peer.lastSeen, peer.maxAge = now, message.maxAge
        if message.kind == wire.DATA:
            peer.messages += 1
        # Re-inserted last: the dict's order is least recently heard first.
        self.peers[message.peer] = peer
        return outcome

    def expire(self, now: float) -> list[Peer]:
        """
        Forget the peers whose max-age has passed.

        @return: them.
        """
        gone = [p for p in self.peers.values() if p.expiresAt() <= now]
        for peer in gone:
            del self.peers[peer.id]
        return gone

    def describe(self, now: float) -> list[dict]:
        """
        @return: the table, JSON-ready, ordered by address.
        """
        return [p.describe(now) for p in sorted(self.peers.values(), key=lambda p: (p.address, p.id))]
