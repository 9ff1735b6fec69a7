"""
Tests for L{netservices.multicast.wire}.
"""

from twisted.trial.unittest import SynchronousTestCase

from netservices.multicast import wire

KEY = b"k" * 32


class WireTests(SynchronousTestCase):
    """
    Encoding and the total parser.
    """

    def test_roundTrip(self) -> None:
        """
        A datagram parses back to what was encoded, padded to C{size}.
        """
        data = wire.encode(wire.DATA, 1, 2, 3, 4, b"xy", size=100)
        self.assertEqual(len(data), 100)
        self.assertEqual(wire.HEADER.size, 40)
        message = wire.parse(data)
        self.assertEqual(
            (message.kind, message.sender, message.session, message.sequence, message.sent),
            (wire.DATA, 1, 2, 3, 4),
        )
        self.assertEqual(message.payload[:2], b"xy")
        self.assertFalse(message.authenticated)

    def test_foreign(self) -> None:
        """
        Anything else is a L{WireError} with a reason, never another
        exception.
        """
        good = wire.encode(wire.DATA, 1, 2, 3, 4)
        for data, reason in [
            (b"", "foreign"), (b"NSMC", "foreign"), (b"x" * 100, "foreign"),
            (good[:4] + b"\x09" + good[5:], "version"),
            (good[:5] + b"\x09" + good[6:], "version"),
            (good[:6] + b"\x01" + good[7:], "foreign"),
        ]:
            with self.assertRaises(wire.WireError) as caught:
                wire.parse(data)
            self.assertEqual(caught.exception.reason, reason)
        for n in range(len(good) + 40):
            try:
                wire.parse(good[:n] + b"\xff" * 5)
            except wire.WireError:
                pass

    def test_hmac(self) -> None:
        """
        With a key: a good tag is accepted; a changed byte, a wrong key or
        no tag are refused.
        """
        data = wire.encode(wire.DATA, 1, 2, 3, 4, b"payload", key=KEY, size=90)
        self.assertEqual(len(data), 90)
        self.assertTrue(wire.parse(data, KEY).authenticated)
        self.assertEqual(wire.parse(data, KEY).payload[:7], b"payload")
        # Without a key the tag is removed unchecked.
        self.assertEqual(wire.parse(data).payload[:7], b"payload")
        forged = data[:50] + bytes([data[50] ^ 1]) + data[51:]
        for bad, key, reason in [
            (forged, KEY, "forged"),
            (data, b"j" * 32, "forged"),
            (wire.encode(wire.DATA, 1, 2, 3, 4), KEY, "unauthenticated"),
        ]:
            with self.assertRaises(wire.WireError) as caught:
                wire.parse(bad, key)
            self.assertEqual(caught.exception.reason, reason)

    def test_replayWindow(self) -> None:
        """
        A keyed codec refuses a datagram seen before and one older than
        the window, and accepts late ones within it once.
        """
        codec = wire.Codec(KEY)
        send = [codec.encode(wire.DATA, 1, 2, n, 0) for n in range(2000)]
        codec.parse(send[5])
        codec.parse(send[3])
        for n in (5, 3):
            with self.assertRaises(wire.WireError) as caught:
                codec.parse(send[n])
            self.assertEqual(caught.exception.reason, "replayed")
        codec.parse(send[1500])
        with self.assertRaises(wire.WireError):
            codec.parse(send[4])  # 1496 behind: outside the window
        codec.parse(send[1499])
        codec.parse(send[1000])
        # Another session of the same sender is another stream.
        codec.parse(codec.encode(wire.DATA, 1, 3, 5, 0))

    def test_readKey(self) -> None:
        """
        Keys come from files and must be 16 bytes or more.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"short\n")
        self.assertRaises(ValueError, wire.readKey, path)
        with open(path, "wb") as f:
            f.write(b"0123456789abcdef0123\n")
        self.assertEqual(wire.readKey(path), b"0123456789abcdef0123")
