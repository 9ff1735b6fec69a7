# -*- test-case-name: tests.info.test_wire -*-
"""
What the info services answer: a L{Sighting} as one line of C{key=value}
text or as JSON, and the query format of udp-info.
"""

from __future__ import annotations

import json

import attrs

from netservices._common.addresses import displayHost

#: The answer's fields, in the order of the text form.
FIELDS = ("transport", "ip", "port", "local_ip", "local_port", "tls", "proxy")

#: The size of the queries our client sends: the longest answer (JSON with
#: two full IPv6 addresses) fits, so udp-info can always answer without
#: sending more than it received.
QUERY_SIZE = 256


@attrs.frozen
class Sighting:
    """
    What a server saw of one client.

    @ivar transport: C{"tcp"}, C{"udp"} or C{"http"}.
    @ivar ip: the client's address.
    @ivar port: the client's port.
    @ivar localIP: the server address the client reached.
    @ivar localPort: the server port the client reached.
    @ivar tls: whether TLS was used.
    @ivar proxy: whether the addresses came from a PROXY header.
    """

    transport: str
    ip: str = attrs.field(converter=displayHost)
    port: int
    localIP: str = attrs.field(converter=displayHost)
    localPort: int
    tls: bool = False
    proxy: bool = False

    def asDict(self) -> dict:
        """
        @return: the fields under their wire names.
        """
        return dict(zip(FIELDS, attrs.astuple(self)))


def formatText(sighting: Sighting) -> bytes:
    """
    @return: the one-line text answer, e.g. C{transport=tcp ip=192.0.2.7
        port=40000 local_ip=192.0.2.1 local_port=7007 tls=no proxy=no}.
    """
    values = sighting.asDict()
    for key in ("tls", "proxy"):
        values[key] = "yes" if values[key] else "no"
    return (" ".join(f"{k}={values[k]}" for k in FIELDS) + "\n").encode("ascii")


def formatJSON(sighting: Sighting) -> bytes:
    """
    @return: the answer as one line of JSON.
    """
    return (json.dumps(sighting.asDict()) + "\n").encode("ascii")


def parseAnswer(data: bytes) -> Sighting:
    """
    Parse an answer in either form.

    @raise ValueError: if C{data} is not an answer.
    """
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError("answer is not ASCII")
    if text.startswith("{"):
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("answer is not valid JSON")
        if not isinstance(values, dict):
            raise ValueError("answer is not a JSON object")
    else:
        values = {}
        for word in text.split():
            key, sep, value = word.partition("=")
            if not sep:
                raise ValueError(f"unexpected {_shorten(word)!r} in answer")
            values[key] = {"yes": True, "no": False}.get(value, value)
    try:
        return Sighting(
            transport=str(values["transport"]),
            ip=str(values["ip"]),
            port=int(values["port"]),
            localIP=str(values["local_ip"]),
            localPort=int(values["local_port"]),
            tls=values["tls"] is True,
            proxy=values["proxy"] is True,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"incomplete answer ({e})")


def _shorten(text: str, limit: int = 40) -> str:
    # Error messages quote what came in; a hostile peer must not fill them.
    return text if len(text) <= limit else text[:limit] + "..."


def makeQuery(wantJSON: bool) -> bytes:
    """
    @return: a udp-info query: its first word picks the format, and it is
        padded to L{QUERY_SIZE} so that the answer is never larger.
    """
    word = b"json\n" if wantJSON else b"text\n"
    return word.ljust(QUERY_SIZE, b" ")


def queryWantsJSON(data: bytes) -> bool:
    """
    @return: whether a udp-info query asks for JSON (its first word is
        C{json}); anything else gets text.
    """
    return data[:5].lower() in (b"json\n", b"json ", b"json\r", b"json")
