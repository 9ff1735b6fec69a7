"""
Tests for L{netservices.chat.wire}: framing, parsing, encoding and names.
"""

from twisted.trial.unittest import SynchronousTestCase

from netservices.chat.wire import (
    TOO_LONG,
    EncodingError,
    LineFramer,
    Message,
    Refusal,
    cleanUsername,
    encode,
    foldCase,
    maskPattern,
    normalizeMask,
    parseLine,
    truncateUTF8,
    validChannel,
    validNick,
)


class LineFramerTests(SynchronousTestCase):
    """
    L{LineFramer} cuts bytes into lines of at most 512 bytes.
    """

    def test_lines(self) -> None:
        """
        Lines end with LF; one CR before it is dropped; empty lines vanish.
        """
        framer = LineFramer()
        self.assertEqual(framer.feed(b"A\r\nB\n\r\nC"), [b"A", b"B"])
        self.assertEqual(framer.feed(b"D\r\n"), [b"CD"])

    def test_splitCharacter(self) -> None:
        """
        A UTF-8 character split across two reads arrives whole.
        """
        data = "PRIVMSG #a :h\u00e9llo\r\n".encode("utf-8")
        cut = data.index(b"\xc3") + 1
        framer = LineFramer()
        self.assertEqual(framer.feed(data[:cut]), [])
        lines = framer.feed(data[cut:])
        self.assertEqual(parseLine(lines[0]), Message("PRIVMSG", ("#a", "h\u00e9llo")))

    def test_limit(self) -> None:
        """
        510 bytes plus CR LF is the longest line; 511 bytes plus CR LF is
        reported as too long and dropped, and the next line is fine.
        """
        framer = LineFramer()
        self.assertEqual(framer.feed(b"x" * 510 + b"\r\n"), [b"x" * 510])
        self.assertEqual(framer.feed(b"y" * 511 + b"\r\nNEXT\r\n"), [TOO_LONG, b"NEXT"])

    def test_unterminated(self) -> None:
        """
        An unterminated line is reported once when it passes the limit, and
        the rest of it, however long, is discarded without being buffered.
        """
        framer = LineFramer()
        self.assertEqual(framer.feed(b"z" * 600), [TOO_LONG])
        self.assertEqual(framer.buffered, 0)
        self.assertEqual(framer.feed(b"z" * 100_000), [])
        self.assertEqual(framer.buffered, 0)
        self.assertEqual(framer.feed(b"z\r\nPING x\r\n"), [b"PING x"])

    def test_bufferBounded(self) -> None:
        """
        The buffer never holds more than the limit.
        """
        framer = LineFramer()
        for _ in range(100):
            framer.feed(b"a" * 7)
        self.assertLessEqual(framer.buffered, 512)


class ParseLineTests(SynchronousTestCase):
    """
    L{parseLine} turns any line into a message or a refusal.
    """

    def test_parameters(self) -> None:
        """
        Middle parameters are split on spaces; a trailing one after C{:}
        keeps its spaces; the command is upper-cased.
        """
        self.assertEqual(
            parseLine(b"privmsg  #a,bob   :hello  there "),
            Message("PRIVMSG", ("#a,bob", "hello  there ")),
        )
        self.assertEqual(parseLine(b"TOPIC #a :"), Message("TOPIC", ("#a", "")))
        self.assertEqual(parseLine(b"JOIN #a key"), Message("JOIN", ("#a", "key")))

    def test_sourceIgnoredTagsKept(self) -> None:
        """
        A source sent by a client is skipped, never used; its tags are
        kept, unescaped.
        """
        self.assertEqual(
            parseLine(b"@a=b :admin!x@y PRIVMSG #a :hi"),
            Message("PRIVMSG", ("#a", "hi"), (("a", "b"),)),
        )

    def test_fifteenParameters(self) -> None:
        """
        The fifteenth parameter takes the rest of the line.
        """
        line = b"CMD " + b" ".join(b"p%d" % i for i in range(20))
        message = parseLine(line)
        self.assertEqual(len(message.params), 15)
        self.assertEqual(message.params[14], "p14 p15 p16 p17 p18 p19")

    def test_refusals(self) -> None:
        """
        NUL, a bare CR, no command or a malformed command are refused.
        """
        self.assertEqual(parseLine(b"PRIVMSG #a :a\0b"), Refusal("nul"))
        self.assertEqual(parseLine(b"PRIVMSG #a :a\rb"), Refusal("bare-cr"))
        self.assertEqual(parseLine(b":onlyprefix"), Refusal("no-command"))
        self.assertEqual(parseLine(b"   "), Refusal("no-command"))
        self.assertEqual(parseLine(b"\x0b\x0b\x0b"), Refusal("bad-command"))
        self.assertEqual(parseLine(b"12 x"), Refusal("bad-command"))

    def test_invalidUTF8(self) -> None:
        """
        Bytes that are not UTF-8 become U+FFFD instead of an error.
        """
        self.assertEqual(
            parseLine(b"PRIVMSG #a :\xff\xfe ok"), Message("PRIVMSG", ("#a", "\ufffd\ufffd ok"))
        )


class EncodeTests(SynchronousTestCase):
    """
    L{encode} is the one way lines are built.
    """

    def test_form(self) -> None:
        """
        A source, the command, middle parameters, and the last one always
        with C{:}.
        """
        self.assertEqual(
            encode("nick!u@h", "PRIVMSG", "#a", "hi there"),
            b":nick!u@h PRIVMSG #a :hi there\r\n",
        )
        self.assertEqual(encode(None, "PING", "irc.test"), b"PING :irc.test\r\n")
        self.assertEqual(encode("s", "CAP", "*", "LS", ""), b":s CAP * LS :\r\n")
        self.assertEqual(encode(None, "QUIT"), b"QUIT\r\n")

    def test_injection(self) -> None:
        """
        CR, LF or NUL in any parameter, and a space, a leading C{:} or
        nothing in a middle parameter, raise instead of being written.
        """
        for bad in ("a\rb", "a\nb", "a\0b"):
            self.assertRaises(EncodingError, encode, "s", "PRIVMSG", "#a", bad)
            self.assertRaises(EncodingError, encode, "s", "PRIVMSG", bad, "text")
        self.assertRaises(EncodingError, encode, "s", "KICK", "#a b", "x")
        self.assertRaises(EncodingError, encode, "s", "KICK", ":x", "y")
        self.assertRaises(EncodingError, encode, "s", "KICK", "", "y")
        self.assertRaises(EncodingError, encode, "a b", "PING", "y")

    def test_truncation(self) -> None:
        """
        An over-long last parameter is cut to fit 512 bytes, at a character
        boundary.
        """
        line = encode("n!u@h", "PRIVMSG", "#a", "\u00e9" * 400)
        self.assertLessEqual(len(line), 512)
        self.assertGreaterEqual(len(line), 510)
        text = parseLine(line[:-2]).params[1]
        self.assertEqual(set(text), {"\u00e9"})

    def test_truncateUTF8(self) -> None:
        """
        L{truncateUTF8} steps back to a character start.
        """
        data = "a\u20acb".encode("utf-8")  # 1 + 3 + 1 bytes
        self.assertEqual(truncateUTF8(data, 2), b"a")
        self.assertEqual(truncateUTF8(data, 4), "a\u20ac".encode("utf-8"))
        self.assertEqual(truncateUTF8(data, 9), data)


class NameTests(SynchronousTestCase):
    """
    Nicks, channels, user names and masks.
    """

    def test_foldCase(self) -> None:
        """
        The C{ascii} case mapping folds only A-Z.
        """
        self.assertEqual(foldCase("ALICE[]\\~"), "alice[]\\~")
        self.assertEqual(foldCase("\u00c9"), "\u00c9")

    def test_nicks(self) -> None:
        """
        Valid and invalid nicks under the modern IRC rules.
        """
        for good in ("alice", "A", "[bot]", "x-1", "_", "a" * 30, "`q`", "{x}|y^"):
            self.assertTrue(validNick(good), good)
        for bad in (
            "", "1abc", "-a", "a b", "a,b", "a*", "a?", "a!b", "a@b", "#a", "&a",
            ":a", "$a", "@a", "+a", "a.b", "a" * 31, "\u00e9", "NickServ", "chanserv",
        ):
            self.assertFalse(validNick(bad), bad)

    def test_channels(self) -> None:
        """
        Channels start with C{#}, have no space, comma or control
        characters, and are at most 50 bytes.
        """
        for good in ("#a", "#caf\u00e9", "##", "#" + "x" * 49):
            self.assertTrue(validChannel(good), good)
        for bad in ("#", "a", "&a", "#a b", "#a,b", "#a\x07", "#\ufffd", "#" + "x" * 50):
            self.assertFalse(validChannel(bad), bad)

    def test_usernames(self) -> None:
        """
        User names are cleaned to a short ASCII ident, or refused.
        """
        self.assertEqual(cleanUsername("~alice"), "alice")
        self.assertEqual(cleanUsername("averyveryverylongname"), "averyveryv")
        self.assertIsNone(cleanUsername("a@b"))
        self.assertIsNone(cleanUsername("\u00e9"))

    def test_masks(self) -> None:
        """
        Masks are completed to C{nick!user@host} and match case-folded.
        """
        self.assertEqual(normalizeMask("bob"), "bob!*@*")
        self.assertEqual(normalizeMask("u@h"), "*!u@h")
        self.assertEqual(normalizeMask("n!u"), "n!u@*")
        pattern = maskPattern("B?b!*@192.0.2.*")
        self.assertTrue(pattern.match(foldCase("BOB!~bob@192.0.2.7")))
        self.assertFalse(pattern.match("bob!~bob@198.51.100.1"))
        self.assertFalse(maskPattern("a.b!*@*").match("axb!u@h"))
