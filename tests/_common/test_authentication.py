"""
Tests for L{netservices._common.authentication}.
"""

from twisted.trial.unittest import SynchronousTestCase

from twisted.python import usage

from netservices._common.authentication import SequenceWindow, keyOption, tag, tagIsValid


class SequenceWindowTests(SynchronousTestCase):
    """
    The sliding window shared by replay and duplicate checks.
    """

    def test_oncePerSequence(self) -> None:
        """
        Each sequence number is accepted once per stream, in any order
        within the window; older ones are refused; streams are separate.
        """
        window = SequenceWindow(size=8)
        self.assertEqual([window.acceptSequence("a", n) for n in (5, 3, 5, 3, 12, 4, 11, 5)],
                         [True, True, False, False, True, False, True, False])
        self.assertTrue(window.acceptSequence("b", 5))

    def test_boundedLRU(self) -> None:
        """
        At most C{maxStreams} streams; the least recently used goes first.
        """
        window = SequenceWindow(maxStreams=2)
        window.acceptSequence("a", 1)
        window.acceptSequence("b", 1)
        window.acceptSequence("a", 2)
        window.acceptSequence("c", 1)
        self.assertEqual(len(window), 2)
        self.assertFalse(window.acceptSequence("a", 2))
        self.assertTrue(window.acceptSequence("b", 1))

    def test_tags(self) -> None:
        """
        A tag checks only with its key and body.
        """
        key = b"k" * 16
        t = tag(key, b"body")
        self.assertTrue(tagIsValid(key, b"body", t))
        self.assertFalse(tagIsValid(key, b"bodz", t))
        self.assertFalse(tagIsValid(b"x" * 16, b"body", t))


class KeyOptionTests(SynchronousTestCase):
    """
    L{keyOption} reads C{--key-file} and explains what is wrong in one line.
    """

    def test_noKey(self):
        """
        Without a path there is no key.
        """
        self.assertIsNone(keyOption(None))

    def test_key(self):
        """
        A file of at least 16 bytes is the key, whitespace stripped.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"0123456789abcdef\n")
        self.assertEqual(keyOption(path), b"0123456789abcdef")

    def test_missingAndShort(self):
        """
        A missing file and a short key are usage errors naming the file.
        """
        missing = self.mktemp()
        error = self.assertRaises(usage.UsageError, keyOption, missing)
        self.assertIn(missing, str(error))
        short = self.mktemp()
        with open(short, "wb") as f:
            f.write(b"short")
        error = self.assertRaises(usage.UsageError, keyOption, short)
        self.assertIn("16 bytes", str(error))
