"""
Tests for L{netservices.broadcast.wire}, L{netservices.broadcast.peers}
and the magic packet of L{netservices.broadcast.wol}.
"""

from twisted.trial.unittest import SynchronousTestCase

from netservices.broadcast import wire
from netservices.broadcast.peers import DUPLICATE, KNOWN_PEER, NEW_PEER, OWN, PeerTable
from netservices.broadcast.wol import magicPacket, parseMAC

KEY = b"k" * 32
NOW = 1_700_000_000.0


class WireTests(SynchronousTestCase):
    """
    Encoding and the total parser.
    """

    def test_roundTrip(self) -> None:
        """
        A message parses back to what was encoded; the header is 36 bytes.
        """
        data = wire.encode(wire.DATA, 7, 3, 5, 30, "héllo".encode())
        self.assertEqual(wire.HEADER.size, 36)
        self.assertEqual(len(data), 36 + 6)
        m = wire.parse(data)
        self.assertEqual((m.kind, m.peer, m.sequence, m.sent, m.maxAge, m.text), (wire.DATA, 7, 3, 5, 30, "héllo"))
        self.assertFalse(m.authenticated)

    def test_total(self) -> None:
        """
        Anything else is a L{WireError} with a reason, never another
        exception: every truncation and every single-byte change of a good
        datagram included.
        """
        good = wire.encode(wire.DATA, 1, 2, 3, 4, b"text")
        for data, reason in [
            (b"", "foreign"), (b"NSBC", "foreign"), (b"x" * 100, "foreign"),
            (good[:4] + b"\x09" + good[5:], "version"),
            (good[:5] + b"\x09" + good[6:], "version"),
            (wire.encode(wire.HELLO, 1, 2, 3, 4, b"x"), "version"),
            (wire.encode(wire.DATA, 1, 2, 3, 4, b"\xff"), "bad-text"),
        ]:
            with self.assertRaises(wire.WireError) as caught:
                wire.parse(data)
            self.assertEqual(caught.exception.reason, reason)
        for cut in range(len(good)):
            try:
                wire.parse(good[:cut])
            except wire.WireError:
                pass
        for i in range(len(good)):
            for value in (0, 0xFF):
                try:
                    wire.parse(good[:i] + bytes([value]) + good[i + 1:], KEY)
                except wire.WireError:
                    pass

    def test_keyed(self) -> None:
        """
        With a key: a tagged message is accepted once; a changed byte is
        C{forged}, an untagged one C{unauthenticated}, a second copy
        C{replayed}, one sent more than a minute away C{stale}.
        """
        codec = wire.Codec(KEY)
        sent = int(NOW * 1e9)
        data = codec.encode(wire.DATA, 1, 0, sent, 30, b"hi")
        self.assertTrue(codec.parse(data, NOW).authenticated)
        for bad, reason in [
            (data, "replayed"),
            (data[:-1] + bytes([data[-1] ^ 1]), "forged"),
            (wire.encode(wire.DATA, 1, 1, sent, 30, b"hi"), "unauthenticated"),
            (wire.encode(wire.DATA, 1, 1, sent, 30, b"hi", key=b"o" * 32), "forged"),
            (codec.encode(wire.DATA, 1, 2, sent - 61 * 10**9, 30, b"hi"), "stale"),
        ]:
            with self.assertRaises(wire.WireError) as caught:
                codec.parse(bad, NOW)
            self.assertEqual(caught.exception.reason, reason)
        self.assertEqual(codec.parse(codec.encode(wire.DATA, 1, 3, sent, 30), NOW).sequence, 3)


def message(peer: int, seq: int, kind: int = wire.DATA, maxAge: int = 10) -> wire.Message:
    return wire.Message(kind, peer, seq, 0, maxAge, b"")


class PeerTableTests(SynchronousTestCase):
    """
    Own messages, duplicates, expiry and bounds.
    """

    def test_ownAndDuplicates(self) -> None:
        """
        Our own messages are dropped; each (peer, sequence) is delivered
        once, in any order, and a bye stays a duplicate after it.
        """
        table = PeerTable(ownId=1)
        self.assertEqual(table.receive(message(1, 0), "10.0.0.1", "eth0", 0), OWN)
        self.assertEqual(table.receive(message(2, 5), "10.0.0.2", "eth0", 0), NEW_PEER)
        self.assertEqual(table.receive(message(2, 5), "10.0.0.2", "eth0", 0), DUPLICATE)
        self.assertEqual(table.receive(message(2, 3), "10.0.0.2", "eth0", 0), KNOWN_PEER)
        self.assertEqual(table.receive(message(2, 3), "10.0.0.2", "eth0", 0), DUPLICATE)
        self.assertEqual(table.receive(message(2, 6, wire.BYE), "10.0.0.2", "eth0", 0), KNOWN_PEER)
        self.assertEqual(len(table), 0)
        self.assertEqual(table.receive(message(2, 6, wire.BYE), "10.0.0.2", "eth0", 0), DUPLICATE)
        self.assertEqual(table.peers, {})

    def test_expiry(self) -> None:
        """
        A peer is forgotten once its max-age passes without news; news
        moves its expiry.
        """
        table = PeerTable(ownId=1)
        table.receive(message(2, 0, wire.HELLO, 10), "10.0.0.2", "eth0", 0)
        table.receive(message(3, 0, wire.HELLO, 20), "10.0.0.3", "eth0", 0)
        table.receive(message(2, 1, wire.DATA, 10), "10.0.0.2", "eth0", 5)
        self.assertEqual(table.expire(14.9), [])
        self.assertEqual([p.id for p in table.expire(15)], [2])
        self.assertEqual([r["peer"] for r in table.describe(15)], [f"{3:016x}"])
        self.assertEqual([p.id for p in table.expire(20)], [3])

    def test_bounded(self) -> None:
        """
        The table and the duplicate memory hold at most C{maxPeers}.
        """
        table = PeerTable(ownId=1, maxPeers=8)
        for peer in range(2, 100):
            table.receive(message(peer, 0), "10.0.0.2", "eth0", 0)
        self.assertEqual(len(table), 8)
        self.assertEqual(len(table.seen), 8)


class MagicPacketTests(SynchronousTestCase):
    """
    Wake-on-LAN.
    """

    def test_bytes(self) -> None:
        """
        6 bytes of 0xFF, then the MAC 16 times: 102 bytes exactly.
        """
        mac = parseMAC("52:54:00:12:34:5f")
        self.assertEqual(mac, bytes([0x52, 0x54, 0x00, 0x12, 0x34, 0x5F]))
        self.assertEqual(parseMAC("52-54-00-12-34-5F"), mac)
        self.assertEqual(parseMAC("5254001234 5f".replace(" ", "")), mac)
        self.assertEqual(magicPacket(mac), bytes.fromhex("ff" * 6 + "52540012345f" * 16))
        self.assertEqual(len(magicPacket(mac)), 102)
        for bad in ("52:54:00:12:34", "52:54-00:12:34:56", "zz:54:00:12:34:56"):
            self.assertRaises(ValueError, parseMAC, bad)
