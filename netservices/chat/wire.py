# -*- test-case-name: tests.chat.test_wire -*-
"""
The IRC message format (modern.ircdocs.horse), on bytes, total in both
directions.

Incoming: L{LineFramer} cuts a byte stream into lines of at most 512
bytes, and L{parseLine} turns one line into a L{Message} or a refusal; no
input makes either raise.  Outgoing: L{encode} is the one way to build a
line: it refuses CR, LF and NUL anywhere, spaces or a leading C{:} in
middle parameters, and cuts an over-long last parameter at a character
boundary, so no parameter can inject a second line.

Names: L{foldCase} is the C{ascii} case mapping advertised in ISUPPORT;
L{validNick} and L{validChannel} are the naming rules.
"""

from __future__ import annotations

import re

import attrs

#: Longest line, CR LF included (RFC 1459 and modern IRC).
MAX_LINE = 512

NICKLEN = 30
CHANNELLEN = 50
TOPICLEN = 390
AWAYLEN = 200
KICKLEN = 255
USERLEN = 10


@attrs.frozen
class Message:
    """
    One parsed line.

    @ivar command: the command in upper case, or a three-digit numeric.
    @ivar params: the parameters, the last one possibly with spaces.
    """

    command: str
    params: tuple[str, ...] = ()


@attrs.frozen
class Refusal:
    """
    A line that cannot be a message.

    @ivar reason: a short fixed token: C{"nul"}, C{"bare-cr"},
        C{"no-command"}, C{"bad-command"}.
    """

    reason: str


#: Returned by L{LineFramer.feed} in place of a line that was too long.
TOO_LONG = b""


class LineFramer:
    """
    Cuts a byte stream into lines ending in LF (one CR before it is
    dropped).  A line longer than C{maxLength} bytes, terminated or not, is
    discarded up to its end and reported once as L{TOO_LONG}; the buffer
    never holds more than C{maxLength} bytes.
    """

    __slots__ = ("maxLength", "_buffer", "_discarding")

    def __init__(self, maxLength: int = MAX_LINE) -> None:
        self.maxLength = maxLength
        self._buffer = b""
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes]:
        """
        @return: the complete lines in C{data} after what came before,
            without their line ends; L{TOO_LONG} for each over-long one.
        """
        buffer = self._buffer + data if self._buffer else data
        lines = buffer.split(b"\n")
        rest = lines.pop()
        out = []
        limit = self.maxLength - 1  # the LF itself counts
        for line in lines:
            if self._discarding:
                self._discarding = False
                continue
            if len(line) > limit:
                out.append(TOO_LONG)
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if line:
                out.append(line)
        if self._discarding:
            rest = b""
        elif len(rest) > limit:
            out.append(TOO_LONG)
            self._discarding = True
            rest = b""
        self._buffer = rest
        return out

    @property
    def buffered(self) -> int:
        """
        @return: bytes held for an unfinished line.
        """
        return len(self._buffer)


_COMMAND = re.compile(r"[A-Za-z]+|[0-9]{3}\Z")


def parseLine(line: bytes) -> Message | Refusal:
    """
    Parse one line (without its line end).  Invalid UTF-8 is decoded with
    U+FFFD in place of the bad bytes, which name checks then refuse; tags
    and a source sent by a client are ignored (the server builds every
    source itself).
    """
    if b"\0" in line:
        return Refusal("nul")
    if b"\r" in line:
        return Refusal("bare-cr")
    text = line.decode("utf-8", "replace")
    position, end = 0, len(text)
    for marker in "@:":
        while position < end and text[position] == " ":
            position += 1
        if position < end and text[position] == marker:
            space = text.find(" ", position)
            position = end if space < 0 else space
    while position < end and text[position] == " ":
        position += 1
    space = text.find(" ", position)
    if space < 0:
        space = end
    command = text[position:space]
    if not command:
        return Refusal("no-command")
    if not _COMMAND.match(command) or len(command) > 32:
        return Refusal("bad-command")
    params: list[str] = []
    position = space
    while position < end and len(params) < 15:
        while position < end and text[position] == " ":
            position += 1
        if position >= end:
            break
        if text[position] == ":" or len(params) == 14:
            trailing = text[position + 1 :] if text[position] == ":" else text[position:]
            params.append(trailing)
            break
        space = text.find(" ", position)
        if space < 0:
            space = end
        params.append(text[position:space])
        position = space
    return Message(command.upper(), tuple(params))


class EncodingError(ValueError):
    """
    A message that cannot be sent as one line.
    """


def encode(source: str | None, command: str, *params: str) -> bytes:
    """
    Build one line, CR LF included, of at most L{MAX_LINE} bytes.

    @param source: C{nick!user@host} or the server name, built by the
        server (never taken from a client); L{None} for none.
    The last parameter always takes the C{:} form.

    @raise EncodingError: for CR, LF or NUL anywhere, a space, a leading
        C{:} or an empty middle parameter, or middle parameters that alone
        overflow the line.
    """
    head = [f":{source}", command] if source else [command]
    for part in head:
        _checkMiddle(part, allowColon=part is head[0] and bool(source))
    middle, last = params[:-1], params[-1:] or None
    for param in middle:
        _checkMiddle(param)
    encoded = " ".join(head + list(middle)).encode("utf-8")
    if last is None:
        if len(encoded) > MAX_LINE - 2:
            raise EncodingError("source and command overflow the line")
        return encoded + b"\r\n"
    (lastParam,) = last
    if "\r" in lastParam or "\n" in lastParam or "\0" in lastParam:
        raise EncodingError("CR, LF or NUL in a parameter")
    # Always the ':' form, even where it is optional: naive clients and
    # bots split on " :" and would misread "PRIVMSG bob hi".
    encoded += b" :"
    room = MAX_LINE - 2 - len(encoded)
    data = lastParam.encode("utf-8")
    if len(data) > room:
        if room < 1:
            raise EncodingError("middle parameters overflow the line")
        data = truncateUTF8(data, room)
    return encoded + data + b"\r\n"


def _checkMiddle(param: str, allowColon: bool = False) -> None:
    if not param or " " in param or "\r" in param or "\n" in param or "\0" in param:
        raise EncodingError(f"not a valid middle parameter: {param!r}")
    if param[0] == ":" and not allowColon:
        raise EncodingError(f"middle parameter starts with ':': {param!r}")


def truncateUTF8(data: bytes, length: int) -> bytes:
    """
    @return: at most C{length} bytes of UTF-8 C{data}, never cutting a
        character in two.
    """
    if len(data) <= length:
        return data
    cut = length
    # Step back over continuation bytes (10xxxxxx) to a character start.
    while cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return data[:cut]


def truncateText(text: str, length: int) -> str:
    """
    @return: C{text} cut to at most C{length} bytes of UTF-8.
    """
    data = text.encode("utf-8")
    if len(data) <= length:
        return text
    return truncateUTF8(data, length).decode("utf-8")


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def foldCase(name: str) -> str:
    """
    @return: C{name} under the C{ascii} case mapping: A-Z to a-z, nothing
        else (so C{[]\\~} and C{{}|^} stay different, unlike rfc1459).
    """
    return name.translate(_ASCII_LOWER)


_NICK = re.compile(r"[A-Za-z_\[\]\\^{}|`][A-Za-z0-9_\[\]\\^{}|`-]*\Z")

#: Nicks that clients or people would read as something else.
RESERVED_NICKS = frozenset(
    {"nickserv", "chanserv", "operserv", "memoserv", "global", "server", "irc"}
)


def validNick(nick: str) -> bool:
    """
    @return: whether C{nick} is allowed: ASCII letters, digits and
        C{_[]\\^{}|`-}, not starting with a digit or C{-}, at most
        L{NICKLEN} characters, not a reserved service name.
    """
    return (
        0 < len(nick) <= NICKLEN
        and _NICK.match(nick) is not None
        and foldCase(nick) not in RESERVED_NICKS
    )


CHANTYPES = "#"


def validChannel(name: str) -> bool:
    """
    @return: whether C{name} is a channel name: C{#} and at least one more
        character, at most L{CHANNELLEN} bytes, no space, comma, colon at
        the start, BEL, control character, or U+FFFD (bytes that were not
        UTF-8).
    """
    if not (1 < len(name) and name[0] in CHANTYPES):
        return False
    if len(name.encode("utf-8")) > CHANNELLEN:
        return False
    for character in name:
        if character in " ,\ufffd" or ord(character) < 0x20 or ord(character) == 0x7F:
            return False
    return True


_USER = re.compile(r"[^\s@!*?,:\x00-\x1f\x7f]+\Z")


def cleanUsername(username: str) -> str | None:
    """
    @return: the ident part of C{nick!user@host} made from what a client
        sent in C{USER}, or L{None} when nothing usable is left.
    """
    username = username.lstrip("~")[:USERLEN]
    if username and username.isascii() and _USER.match(username):
        return username
    return None


def maskPattern(mask: str) -> re.Pattern:
    """
    @return: a compiled pattern for a ban mask (C{*} any run, C{?} one
        character) matching case-folded C{nick!user@host} strings.
        Each part between two C{*} is matched at its first place and
        never retried (a lookahead is atomic), so matching takes time in
        proportion to the string's length times the mask's, never the
        exponential backtracking of C{.*a.*a.*a...X}.
    """

    def literal(part: str) -> str:
        return "".join("." if c == "?" else re.escape(c) for c in part)

    first, *rest = foldCase(mask).split("*")
    if not rest:
        return re.compile(literal(first) + r"\Z", re.DOTALL)
    *middle, last = rest
    pattern = literal(first)
    for index, part in enumerate(p for p in middle if p):
        pattern += f"(?=(?P<m{index}>.*?{literal(part)}))(?P=m{index})"
    return re.compile(pattern + ".*" + literal(last) + r"\Z", re.DOTALL)


def normalizeMask(mask: str) -> str:
    """
    @return: a ban mask in full C{nick!user@host} form: C{nick} becomes
        C{nick!*@*}, C{user@host} becomes C{*!user@host}.
    """
    if "!" not in mask and "@" not in mask:
        return f"{mask}!*@*"
    if "!" not in mask:
        return f"*!{mask}"
    if "@" not in mask:
        return f"{mask}@*"
    return mask
