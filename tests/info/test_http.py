"""
Tests for L{netservices.info.http}.
"""

import json

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from netservices.info.http import InfoResource


def get(accept=None, secure=False):
    """
    Render a GET of C{/} from 192.0.2.7:40000 and return the request and
    body.
    """
    request = DummyRequest([b""])
    request.client = IPv4Address("TCP", "192.0.2.7", 40000)
    request.channel = DummyChannel()
    if accept is not None:
        request.requestHeaders.setRawHeaders(b"accept", [accept])
    request.isSecure = lambda: secure
    body = InfoResource().render_GET(request)
    return request, body


class InfoResourceTests(SynchronousTestCase):
    """
    L{InfoResource} answers with the client's address over HTTP.
    """

    def test_text(self):
        """
        By default the answer is the text line, as text/plain.
        """
        request, body = get()
        self.assertTrue(body.startswith(b"transport=http ip=192.0.2.7 port=40000 "))
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"),
            [b"text/plain; charset=utf-8"],
        )

    def test_json(self):
        """
        A client that accepts JSON gets JSON, marked as such.
        """
        request, body = get(accept=b"application/json", secure=True)
        answer = json.loads(body)
        self.assertEqual((answer["ip"], answer["port"], answer["tls"]), ("192.0.2.7", 40000, True))
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json"]
        )
