"""
Tests for L{netservices._common.client}.
"""

import socket

from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.hazmat import DNS_ID, DNSMismatch
from twisted.internet import defer, error
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.trial.unittest import SynchronousTestCase

from netservices._common.client import (
    ClientError,
    connectionFailure,
    describeFailure,
    resolveDatagramTarget,
    tlsOptions,
)

class TLSOptionsTests(SynchronousTestCase):
    """
    L{tlsOptions} verifies the server against a CA file or the system's
    trust store, and says in one line why a CA file cannot be used.
    """

    def test_systemTrustStore(self) -> None:
        """
        Without a CA file, the options are made for the name.
        """
        self.assertTrue(
            IOpenSSLClientConnectionCreator.providedBy(tlsOptions("example.com", None))
        )

    def test_missingFile(self) -> None:
        """
        A CA file that cannot be read is a L{ClientError} naming it.
        """
        path = self.mktemp()
        with self.assertRaises(ClientError) as caught:
            tlsOptions("example.com", path)
        self.assertEqual(
            str(caught.exception), f"cannot read CA file {path}: No such file or directory"
        )

    def test_notPEM(self) -> None:
        """
        A CA file without a certificate is a L{ClientError} naming it.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a certificate\n")
        with self.assertRaises(ClientError) as caught:
            tlsOptions("example.com", path)
        self.assertEqual(str(caught.exception), f"CA file {path} holds no PEM certificate")


class ConnectionFailureTests(SynchronousTestCase):
    """
    L{connectionFailure} and L{describeFailure} put failures in one line.
    """

    def test_refused(self) -> None:
        """
        A refused connection names the address.
        """
        self.assertEqual(
            connectionFailure(error.ConnectionRefusedError(), "h", "h:1"),
            "connection refused by h:1",
        )

    def test_unresolvable(self) -> None:
        """
        A name that does not resolve is named.
        """
        self.assertEqual(
            connectionFailure(error.DNSLookupError("h"), "h", "h:1"), "cannot resolve h"
        )

    def test_tlsErrors(self) -> None:
        """
        OpenSSL's reasons are given; without any, a handshake error.
        """
        failed = SSL.Error([("SSL routines", "", "certificate verify failed")])
        self.assertEqual(
            connectionFailure(failed, "h", "h:1"), "h:1: TLS failed: certificate verify failed"
        )
        self.assertEqual(describeFailure(SSL.Error()), "TLS failed: handshake error")

    def test_wrongName(self) -> None:
        """
        A certificate for other names says which name it failed.
        """
        mismatch = VerificationError(errors=[DNSMismatch(mismatched_id=DNS_ID("wrong.example"))])
        self.assertEqual(
            describeFailure(mismatch),
            "TLS failed: the certificate is not valid for wrong.example",
        )

    def test_other(self) -> None:
        """
        Anything else is its message on one line, or its type.
        """
        self.assertEqual(
            connectionFailure(Exception("two\n   lines"), "h", "h:1"), "h:1: two lines"
        )
        self.assertEqual(describeFailure(ValueError()), "ValueError")


class ResolveTests(SynchronousTestCase):
    """
    L{resolveDatagramTarget} takes IP addresses as they are.
    """

    def resolve(self, host: str) -> tuple[int, str]:
        """
        @return: what L{resolveDatagramTarget} found, without a thread.
        """
        return self.successResultOf(
            defer.Deferred.fromCoroutine(resolveDatagramTarget(host, 7))
        )

    def test_addresses(self) -> None:
        """
        IPv4, IPv6 and IPv4-mapped addresses give their family.
        """
        self.assertEqual(self.resolve("127.0.0.1"), (socket.AF_INET, "127.0.0.1"))
        self.assertEqual(self.resolve("::1"), (socket.AF_INET6, "::1"))
        self.assertEqual(self.resolve("::ffff:192.0.2.1"), (socket.AF_INET, "192.0.2.1"))
