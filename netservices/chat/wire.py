# -*- test-case-name: tests.chat.test_wire -*-
"""
The IRC message format (modern.ircdocs.horse), on bytes, total in both
directions.

Incoming: L{LineFramer} cuts a byte stream into lines of at most 512
bytes (plus, where allowed, a tag section of at most 4094 bytes: IRCv3
message-tags), and L{parseLine} turns one line into a L{Message} or a
refusal; no input makes either raise.  Outgoing: L{encode} is the one way
to build a line: it refuses CR, LF and NUL anywhere, spaces or a leading
C{:} in middle parameters, and cuts an over-long last parameter at a
character boundary, so no parameter can inject a second line;
L{encodeTags} builds the tag section put in front of such a line, escaping
values and refusing invalid keys.

Names: L{foldCase} is the C{ascii} case mapping advertised in ISUPPORT;
L{validNick} and L{validChannel} are the naming rules.
"""

from __future__ import annotations

import re

import attrs

#: Longest line, CR LF included (RFC 1459 and modern IRC), tags excluded.
MAX_LINE = 512

#: Longest tag section a client may send, without its C{@} and the space
#: after it (IRCv3 message-tags).
MAX_CLIENT_TAGS = 4094

#: Longest tag section the server sends, C{@} and space included.
MAX_SERVER_TAGS = 8191

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
    @ivar tags: the message tags, unescaped, in the order sent (a key
        sent twice keeps its last value); a tag without a value has
        C{""}.
    @ivar source: the source in front of the line, for clients reading a
        server's lines; the chat server never uses it (it builds every
        source itself), and it takes no part in comparing messages.
    """

    command: str
    params: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    source: str | None = attrs.field(default=None, eq=False)

    def tag(self, key: str) -> str | None:
        """
        @return: the value of tag C{key}, or L{None} if it was not sent.
        """
        for name, value in self.tags:
            if name == key:
                return value
        return None


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

    With C{maxTags}, a line starting with C{@} may have a tag section of
    up to C{maxTags} bytes (without the C{@} and the space after it) in
    front of the C{maxLength} bytes (IRCv3 message-tags); the buffer then
    holds at most C{maxLength + maxTags + 2} bytes.
    """

    __slots__ = ("maxLength", "maxTags", "_buffer", "_discarding")

    def __init__(self, maxLength: int = MAX_LINE, maxTags: int = 0) -> None:
        self.maxLength = maxLength
        self.maxTags = maxTags
        self._buffer = b""
        self._discarding = False

    def _tooLong(self, line: bytes, complete: bool) -> bool:
        """
        @return: whether C{line}, longer than C{maxLength - 1} bytes, is
            too long even with its tag section set apart.
        """
        if not self.maxTags or line[:1] != b"@":
            return True
        space = line.find(b" ", 0, self.maxTags + 2)
        if space < 0:
            return complete or len(line) > self.maxTags + 1
        return len(line) - space - 1 > self.maxLength - 1

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
            if len(line) > limit and self._tooLong(line, True):
                out.append(TOO_LONG)
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if line:
                out.append(line)
        if self._discarding:
            rest = b""
        elif len(rest) > limit and self._tooLong(rest, False):
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
    U+FFFD in place of the bad bytes, which name checks then refuse.  The
    source is kept in L{Message.source} for clients; the server ignores it.
    """
    if b"\0" in line:
        return Refusal("nul")
    if b"\r" in line:
        return Refusal("bare-cr")
    text = line.decode("utf-8", "replace")
    position, end = 0, len(text)
    tags: tuple[tuple[str, str], ...] = ()
    source: str | None = None
    for marker in "@:":
        while position < end and text[position] == " ":
            position += 1
        if position < end and text[position] == marker:
            space = text.find(" ", position)
            field = text[position + 1 : end if space < 0 else space]
            if marker == "@":
                tags = parseTags(field)
            else:
                source = field or None
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
    return Message(command.upper(), tuple(params), tags, source)


#: A tag key: an optional client-only C{+}, an optional vendor (a host
#: name) and C{/}, and a name of letters, digits and hyphens.
_TAG_KEY = re.compile(r"\+?(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?/)?[A-Za-z0-9-]+\Z")

_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_ESCAPES = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})


def validTagKey(key: str) -> bool:
    """
    @return: whether C{key} is a valid tag key (IRCv3 message-tags).
    """
    return _TAG_KEY.match(key) is not None


def unescapeTagValue(value: str) -> str:
    """
    @return: a tag value as sent, unescaped: C{\\:} is C{;}, C{\\s} a
        space, C{\\\\} a backslash, C{\\r} CR and C{\\n} LF; a backslash
        before anything else is dropped, and so is a trailing one.
    """
    if "\\" not in value:
        return value
    out, index, end = [], 0, len(value)
    while index < end:
        character = value[index]
        if character == "\\":
            index += 1
            if index < end:
                following = value[index]
                out.append(_UNESCAPES.get(following, following))
        else:
            out.append(character)
        index += 1
    return "".join(out)


def escapeTagValue(value: str) -> str:
    """
    @return: C{value} escaped for a tag (the inverse of
        L{unescapeTagValue}).
    """
    return value.translate(_ESCAPES)


def parseTags(section: str) -> tuple[tuple[str, str], ...]:
    """
    @return: the tags of a tag section (without its C{@}), unescaped; tags
        with invalid keys are left out, and a key sent twice keeps its
        last value (in the place of its first).
    """
    tags: dict[str, str] = {}
    for item in section.split(";"):
        key, _, value = item.partition("=")
        if validTagKey(key):
            tags[key] = unescapeTagValue(value)
    return tuple(tags.items())


def encodeTags(tags) -> bytes:
    """
    @param tags: C{(key, value)} pairs; an empty value is sent as a key
        alone.
    @return: the tag section to put in front of a line: C{@} the tags and
        a space, or C{b""} for no tags.

    @raise EncodingError: for an invalid key, or a section longer than
        L{MAX_SERVER_TAGS}.
    """
    if not tags:
        return b""
    parts = []
    for key, value in tags:
        if not validTagKey(key):
            raise EncodingError(f"not a valid tag key: {key!r}")
        parts.append(f"{key}={escapeTagValue(value)}" if value else key)
    section = ("@" + ";".join(parts) + " ").encode("utf-8")
    if len(section) > MAX_SERVER_TAGS:
        raise EncodingError("tags overflow their section")
    return section


class EncodingError(ValueError):
    """
    A message that cannot be sent as one line.
    """


def encode(source: str | None, command: str, *params: str, tags=None) -> bytes:
    """
    Build one line, CR LF included, of at most L{MAX_LINE} bytes after its
    tags.

    @param tags: C{(key, value)} pairs for L{encodeTags}, or L{None}.

    @param source: C{nick!user@host} or the server name, built by the
        server (never taken from a client); L{None} for none.
    The last parameter always takes the C{:} form.

    @raise EncodingError: for CR, LF or NUL anywhere, a space, a leading
        C{:} or an empty middle parameter, or middle parameters that alone
        overflow the line.
    """
    if tags:
        return encodeTags(tags) + encode(source, command, *params)
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


def echoParam(param: str) -> str:
    """
    @return: C{param}, something a client sent, as a middle parameter:
        C{*} when it is empty, starts with C{:} or has a space, CR, LF or
        NUL; else cut to 64 bytes.
    """
    if not param or param[0] == ":" or any(c in param for c in " \r\n\0"):
        return "*"
    return truncateText(param, 64)


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


def checkServerName(name: str) -> str:
    """
    @return: C{name}, if it can be a server or network name: ASCII, one
        middle parameter (no spaces or control characters), no C{!} or
        C{@} (which would make it look like a user's source).
    @raise ValueError: with one line, if not.
    """
    try:
        encode(name, "PING", "x")
    except ValueError:
        raise ValueError(f"{name!r} cannot be a server name (no spaces or control characters)")
    if "!" in name or "@" in name or not name.isascii():
        raise ValueError(f"{name!r} cannot be a server name (ASCII, no '!' or '@')")
    return name
