# -*- test-case-name: tests.info.test_http -*-
"""
tcp-info over HTTP: C{curl http://HOST:PORT/} prints the same answer, as
text, or as JSON for C{Accept: application/json}.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from netservices._common.proxy import isProxied
from netservices.info.tcp import logSighting, sightingFrom
from netservices.info.wire import formatJSON, formatText


class InfoResource(Resource):
    """
    Answers every path with what the server saw of the client.
    """

    isLeaf = True

    def __init__(self, log: Logger | None = None) -> None:
        super().__init__()
        self.log = log or Logger(namespace="netservices.tcp-info.http")

    def render_GET(self, request: Request) -> bytes:
        sighting = sightingFrom(
            "http",
            request.getClientAddress(),
            request.getHost(),
            request.isSecure(),
            isProxied(request.channel.transport),
        )
        logSighting(self.log, sighting)
        wantJSON = b"application/json" in (request.getHeader(b"accept") or b"")
        request.setHeader(
            b"content-type",
            b"application/json" if wantJSON else b"text/plain; charset=utf-8",
        )
        request.setHeader(b"cache-control", b"no-store")
        return (formatJSON if wantJSON else formatText)(sighting)

    render_HEAD = render_GET
