"""
Tests for L{netservices._common.tls}.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import shutil
import stat
import tempfile
import warnings
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    SSL4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, CertificateOptions, optionsForClientTLS
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from netservices._common import tls
from netservices._common.tls import (
    CERTIFICATE_FILE,
    KEY_FILE,
    ServerCertificate,
    createSelfSignedCertificate,
    defaultHostnames,
    ensureSelfSignedCertificate,
    isDNSName,
    loadServerCertificate,
)
from netservices.testing import NO_IPV6

ONE_HOUR = datetime.timedelta(hours=1)


def temporaryDirectory(testCase: SynchronousTestCase) -> Path:
    """
    @return: a new directory, removed after the test (not under the current
        directory, which is the source tree under pytest).
    """
    directory = Path(tempfile.mkdtemp(prefix="netservices-test-tls-"))
    testCase.addCleanup(shutil.rmtree, directory, True)
    return directory


def mode(path: Path) -> int:
    """
    @return: the permission bits of C{path}.
    """
    return stat.S_IMODE(path.stat().st_mode)


def alternativeNames(certificate: x509.Certificate) -> list[x509.GeneralName]:
    """
    @return: the subject alternative names of C{certificate}, in order.
    """
    return list(
        certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    )


def pem(*objects) -> bytes:
    """
    @return: private keys (unencrypted PKCS#8) and certificates as PEM, in
        the order given.
    """
    parts = []
    for thing in objects:
        if isinstance(thing, x509.Certificate):
            parts.append(thing.public_bytes(serialization.Encoding.PEM))
        else:
            parts.append(
                thing.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
    return b"".join(parts)


def fileState(path: Path) -> tuple[int, int, bytes]:
    """
    @return: what changes if C{path} is written again: its inode, its
        modification time and its contents.
    """
    status = path.stat()
    return status.st_ino, status.st_mtime_ns, path.read_bytes()


class HostnameTests(SynchronousTestCase):
    """
    L{isDNSName} and L{defaultHostnames}.
    """

    def test_dnsNames(self) -> None:
        """
        Host names of letters, digits and hyphens are DNS names; IP
        addresses, empty labels, labels starting or ending with a hyphen,
        underscores, spaces and non-ASCII names are not.
        """
        for name in ["localhost", "vm", "chat.example.com", "a-1.example.", "x" * 63]:
            self.assertTrue(isDNSName(name), name)
        for name in [
            "",
            ".",
            "127.0.0.1",
            "::1",
            "a..b",
            "-a.example",
            "a-.example",
            "my_host",
            "my host",
            "h\u00e9te.example",
            "x" * 64,
            ".".join(["abc"] * 70),
        ]:
            self.assertFalse(isDNSName(name), name)

    def test_defaultHostnames(self) -> None:
        """
        The default names are C{localhost}, C{127.0.0.1}, C{::1} and the
        host's name.
        """
        self.patch(tls.socket, "gethostname", lambda: "chat.example")
        self.assertEqual(defaultHostnames(), ["localhost", "127.0.0.1", "::1", "chat.example"])

    def test_defaultHostnamesSkipsOddNames(self) -> None:
        """
        A host name that is C{localhost} or not a DNS name is left out.
        """
        for hostname in ["localhost", "LOCALHOST.", "my_host", ""]:
            self.patch(tls.socket, "gethostname", lambda: hostname)
            self.assertEqual(defaultHostnames(), ["localhost", "127.0.0.1", "::1"], hostname)


class CreateTests(SynchronousTestCase):
    """
    L{createSelfSignedCertificate}.
    """

    def setUp(self) -> None:
        self.directory = temporaryDirectory(self)
        self.patch(tls.socket, "gethostname", lambda: "chat.example")

    def test_files(self) -> None:
        """
        The key is written with mode 0600, the certificate readable by
        others; nothing else is left in the directory.  Both load back as
        the objects returned.
        """
        keyPath, certificatePath = self.directory / "k.pem", self.directory / "c.pem"
        created = createSelfSignedCertificate(keyPath, certificatePath)
        self.assertEqual(mode(keyPath), 0o600)
        self.assertEqual(mode(certificatePath) & 0o600, 0o600)
        self.assertEqual(sorted(os.listdir(self.directory)), ["c.pem", "k.pem"])
        self.assertEqual((created.keyPath, created.certificatePath), (keyPath, certificatePath))
        self.assertEqual(created.chain, ())
        key = serialization.load_pem_private_key(keyPath.read_bytes(), None)
        self.assertEqual(
            key.private_numbers(), created.key.private_numbers()  # type: ignore[union-attr]
        )
        self.assertEqual(
            x509.load_pem_x509_certificate(certificatePath.read_bytes()), created.certificate
        )

    def test_keyAndSignature(self) -> None:
        """
        The key is EC P-256 and the certificate, signed with SHA-256 by
        that key, is its own issuer.
        """
        created = createSelfSignedCertificate(self.directory / "k", self.directory / "c")
        self.assertIsInstance(created.key, ec.EllipticCurvePrivateKey)
        self.assertIsInstance(created.key.curve, ec.SECP256R1)
        certificate = created.certificate
        self.assertIsInstance(certificate.signature_hash_algorithm, hashes.SHA256)
        self.assertEqual(certificate.issuer, certificate.subject)
        certificate.verify_directly_issued_by(certificate)

    def test_defaultNames(self) -> None:
        """
        Without C{hostnames}, the certificate is for C{localhost},
        C{127.0.0.1}, C{::1} and the host's name; its common name is
        C{localhost}.
        """
        certificate = createSelfSignedCertificate(
            self.directory / "k", self.directory / "c"
        ).certificate
        self.assertEqual(
            alternativeNames(certificate),
            [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
                x509.DNSName("chat.example"),
            ],
        )
        self.assertEqual(
            certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
            "localhost",
        )

    def test_givenNames(self) -> None:
        """
        C{hostnames} replaces the default names: each is an IP address or
        a DNS name, duplicates are dropped, and the first is the common
        name.
        """
        certificate = createSelfSignedCertificate(
            self.directory / "k",
            self.directory / "c",
            ["192.0.2.7", "chat.example.org", "2001:db8::7", "192.0.2.7"],
        ).certificate
        self.assertEqual(
            alternativeNames(certificate),
            [
                x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
                x509.DNSName("chat.example.org"),
                x509.IPAddress(ipaddress.ip_address("2001:db8::7")),
            ],
        )
        self.assertEqual(
            certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
            "192.0.2.7",
        )

    def test_badNames(self) -> None:
        """
        An empty list of names, or a name that is neither an IP address
        nor a DNS name, is a L{ValueError}, and nothing is written.
        """
        for names in [[], ["my host"], ["localhost", "under_score.example"]]:
            self.assertRaises(
                ValueError,
                createSelfSignedCertificate,
                self.directory / "k",
                self.directory / "c",
                names,
            )
        self.assertEqual(os.listdir(self.directory), [])

    def test_oneStringName(self) -> None:
        """
        One string given as C{hostnames} is a L{TypeError}, not a list of
        one-letter names.
        """
        self.assertRaises(
            TypeError,
            createSelfSignedCertificate,
            self.directory / "k",
            self.directory / "c",
            "localhost",
        )
        self.assertEqual(os.listdir(self.directory), [])

    def test_extensions(self) -> None:
        """
        The certificate is an end-entity certificate for TLS servers, with
        key identifiers.
        """
        certificate = createSelfSignedCertificate(
            self.directory / "k", self.directory / "c"
        ).certificate
        extensions = certificate.extensions
        basic = extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertTrue(basic.critical)
        self.assertFalse(basic.value.ca)
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
        self.assertTrue(usage.digital_signature)
        self.assertFalse(usage.key_cert_sign)
        self.assertEqual(
            list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value),
            [ExtendedKeyUsageOID.SERVER_AUTH],
        )
        identifier = extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        authority = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        self.assertEqual(authority.key_identifier, identifier.digest)

    def test_validity(self) -> None:
        """
        The certificate is valid from an hour ago for C{days} days.
        """
        before = datetime.datetime.now(datetime.timezone.utc)
        certificate = createSelfSignedCertificate(
            self.directory / "k", self.directory / "c", days=30
        ).certificate
        after = datetime.datetime.now(datetime.timezone.utc)
        start = certificate.not_valid_before_utc
        self.assertTrue(
            before - ONE_HOUR - datetime.timedelta(seconds=1) <= start <= after - ONE_HOUR,
            (before, start, after),
        )
        self.assertEqual(
            certificate.not_valid_after_utc - start, datetime.timedelta(days=30) + ONE_HOUR
        )

    def test_defaultValidity(self) -> None:
        """
        By default the certificate is valid for 825 days.
        """
        certificate = createSelfSignedCertificate(
            self.directory / "k", self.directory / "c"
        ).certificate
        self.assertEqual(
            certificate.not_valid_after_utc - certificate.not_valid_before_utc,
            datetime.timedelta(days=825) + ONE_HOUR,
        )

    def test_fingerprint(self) -> None:
        """
        L{ServerCertificate.fingerprint} is the SHA-256 of the DER
        certificate as uppercase hex pairs joined by colons.
        """
        created = createSelfSignedCertificate(self.directory / "k", self.directory / "c")
        der = x509.load_pem_x509_certificate(
            (self.directory / "c").read_bytes()
        ).public_bytes(serialization.Encoding.DER)
        digest = hashlib.sha256(der).hexdigest().upper()
        expected = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
        self.assertEqual(created.fingerprint, expected)
        self.assertEqual(len(created.fingerprint), 32 * 3 - 1)

    def test_keyFileCreatedPrivate(self) -> None:
        """
        The key is written to a new temporary file in its directory that
        is created (exclusively) with mode 0600, then renamed: it is never
        readable by others, not even for a moment.
        """
        opened = []
        realOpen = os.open

        def recordingOpen(path, flags, mode=0o777, *args, **kwargs):
            opened.append((Path(path), flags, mode))
            return realOpen(path, flags, mode, *args, **kwargs)

        self.patch(os, "open", recordingOpen)
        keyPath = self.directory / "k.pem"
        createSelfSignedCertificate(keyPath, self.directory / "c.pem")
        [(path, flags, keyMode)] = [entry for entry in opened if "k.pem" in entry[0].name]
        self.assertEqual(path.parent, self.directory)
        self.assertNotEqual(path, keyPath)
        self.assertEqual(keyMode, 0o600)
        self.assertTrue(flags & os.O_CREAT and flags & os.O_EXCL, flags)
        self.assertFalse(path.exists())

    def test_replacesFiles(self) -> None:
        """
        Existing files are replaced; a key file that was readable by others
        is replaced by one that is not.
        """
        keyPath, certificatePath = self.directory / "k", self.directory / "c"
        keyPath.write_bytes(b"old key")
        keyPath.chmod(0o644)
        certificatePath.write_bytes(b"old certificate")
        created = createSelfSignedCertificate(keyPath, certificatePath)
        self.assertEqual(mode(keyPath), 0o600)
        self.assertEqual(
            loadServerCertificate(keyPath, certificatePath).fingerprint, created.fingerprint
        )

    def test_oneFile(self) -> None:
        """
        Given the same path twice, the key and certificate are written to
        one file, mode 0600, that L{loadServerCertificate} loads alone.
        """
        path = self.directory / "both.pem"
        created = createSelfSignedCertificate(path, path)
        self.assertEqual(mode(path), 0o600)
        self.assertEqual(os.listdir(self.directory), ["both.pem"])
        loaded = loadServerCertificate(path)
        self.assertEqual(loaded.fingerprint, created.fingerprint)
        self.assertEqual((loaded.keyPath, loaded.certificatePath), (path, path))

    def test_makesDirectories(self) -> None:
        """
        Missing directories are created with mode 0700.
        """
        nested = self.directory / "a" / "b"
        createSelfSignedCertificate(nested / "k", nested / "c")
        self.assertEqual(mode(self.directory / "a"), 0o700)
        self.assertEqual(mode(nested), 0o700)


class EnsureTests(SynchronousTestCase):
    """
    L{ensureSelfSignedCertificate}.
    """

    def setUp(self) -> None:
        self.directory = temporaryDirectory(self) / "state" / "tls"
        self.keyPath = self.directory / KEY_FILE
        self.certificatePath = self.directory / CERTIFICATE_FILE

    def test_creates(self) -> None:
        """
        The first call creates the directory (mode 0700) and the key and
        certificate in it, for the names given.
        """
        certificate, created = ensureSelfSignedCertificate(self.directory, ["chat.example"])
        self.assertTrue(created)
        self.assertEqual(mode(self.directory), 0o700)
        self.assertEqual(mode(self.directory.parent), 0o700)
        self.assertEqual(sorted(os.listdir(self.directory)), sorted([KEY_FILE, CERTIFICATE_FILE]))
        self.assertEqual(mode(self.keyPath), 0o600)
        self.assertEqual(
            (certificate.keyPath, certificate.certificatePath),
            (self.keyPath, self.certificatePath),
        )
        self.assertEqual(alternativeNames(certificate.certificate), [x509.DNSName("chat.example")])

    def test_idempotent(self) -> None:
        """
        Later calls load the same certificate and write nothing.
        """
        first, created = ensureSelfSignedCertificate(self.directory)
        self.assertTrue(created)
        states = fileState(self.keyPath), fileState(self.certificatePath)
        second, created = ensureSelfSignedCertificate(self.directory)
        self.assertFalse(created)
        self.assertEqual(second.fingerprint, first.fingerprint)
        self.assertEqual(second.certificate, first.certificate)
        self.assertEqual((fileState(self.keyPath), fileState(self.certificatePath)), states)

    def test_existingNamesKept(self) -> None:
        """
        An existing certificate is loaded as it is, whatever names are
        asked for.
        """
        first, _ = ensureSelfSignedCertificate(self.directory, ["one.example"])
        second, created = ensureSelfSignedCertificate(self.directory, ["two.example"])
        self.assertFalse(created)
        self.assertEqual(second.fingerprint, first.fingerprint)

    def test_missingKey(self) -> None:
        """
        If the key is missing, a new pair is made.
        """
        first, _ = ensureSelfSignedCertificate(self.directory)
        self.keyPath.unlink()
        second, created = ensureSelfSignedCertificate(self.directory)
        self.assertTrue(created)
        self.assertNotEqual(second.fingerprint, first.fingerprint)
        loaded = loadServerCertificate(self.keyPath, self.certificatePath)
        self.assertEqual(loaded.fingerprint, second.fingerprint)

    def test_missingCertificate(self) -> None:
        """
        If the certificate is missing, a new pair is made.
        """
        first, _ = ensureSelfSignedCertificate(self.directory)
        self.certificatePath.unlink()
        second, created = ensureSelfSignedCertificate(self.directory)
        self.assertTrue(created)
        self.assertNotEqual(second.fingerprint, first.fingerprint)
        loaded = loadServerCertificate(self.keyPath, self.certificatePath)
        self.assertEqual(loaded.fingerprint, second.fingerprint)

    def test_brokenPairKept(self) -> None:
        """
        If both files exist but do not load, that is a L{ValueError} and
        the files are left alone.
        """
        ensureSelfSignedCertificate(self.directory)
        self.certificatePath.write_bytes(b"not a certificate\n")
        states = fileState(self.keyPath), fileState(self.certificatePath)
        error = self.assertRaises(ValueError, ensureSelfSignedCertificate, self.directory)
        self.assertIn(str(self.certificatePath), str(error))
        self.assertEqual((fileState(self.keyPath), fileState(self.certificatePath)), states)


class LoadTests(SynchronousTestCase):
    """
    L{loadServerCertificate}.
    """

    def setUp(self) -> None:
        self.directory = temporaryDirectory(self)
        self.keyPath = self.directory / "key.pem"
        self.certificatePath = self.directory / "cert.pem"
        self.created = createSelfSignedCertificate(
            self.keyPath, self.certificatePath, ["localhost"]
        )

    def assertLoadError(self, keyPath, certificatePath, *mentions: Path) -> str:
        """
        Check that loading C{keyPath} and C{certificatePath} is a
        L{ValueError} with a one-line message naming each of C{mentions}.

        @return: the message.
        """
        error = self.assertRaises(ValueError, loadServerCertificate, keyPath, certificatePath)
        message = str(error)
        self.assertNotIn("\n", message)
        for path in mentions:
            self.assertIn(str(path), message)
        return message

    def test_separateFiles(self) -> None:
        """
        A key and certificate in two files load as what was written.
        """
        loaded = loadServerCertificate(str(self.keyPath), str(self.certificatePath))
        self.assertIsInstance(loaded, ServerCertificate)
        self.assertEqual(loaded.certificate, self.created.certificate)
        self.assertEqual(loaded.fingerprint, self.created.fingerprint)
        self.assertEqual(loaded.chain, ())
        self.assertEqual(
            (loaded.keyPath, loaded.certificatePath), (self.keyPath, self.certificatePath)
        )

    def test_combinedFile(self) -> None:
        """
        With no certificate path, both are read from the key file, in
        either order.
        """
        for name, objects in [
            ("key-first.pem", (self.created.key, self.created.certificate)),
            ("cert-first.pem", (self.created.certificate, self.created.key)),
        ]:
            path = self.directory / name
            path.write_bytes(pem(*objects))
            loaded = loadServerCertificate(path)
            self.assertEqual(loaded.fingerprint, self.created.fingerprint, name)
            self.assertEqual(loaded.chain, ())
            self.assertEqual((loaded.keyPath, loaded.certificatePath), (path, path))

    def test_traditionalKeyFormat(self) -> None:
        """
        A key in the traditional C{EC PRIVATE KEY} format loads too.
        """
        self.keyPath.write_bytes(
            self.created.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        loaded = loadServerCertificate(self.keyPath, self.certificatePath)
        self.assertEqual(loaded.fingerprint, self.created.fingerprint)

    def test_chain(self) -> None:
        """
        Certificates after the first in the certificate file are the
        chain.
        """
        other = createSelfSignedCertificate(
            self.directory / "k2", self.directory / "c2", ["intermediate.example"]
        )
        self.certificatePath.write_bytes(pem(self.created.certificate, other.certificate))
        loaded = loadServerCertificate(self.keyPath, self.certificatePath)
        self.assertEqual(loaded.certificate, self.created.certificate)
        self.assertEqual(loaded.chain, (other.certificate,))

    def test_missingKeyFile(self) -> None:
        """
        A missing key file is named.
        """
        missing = self.directory / "nowhere.pem"
        self.assertLoadError(missing, self.certificatePath, missing)

    def test_missingCertificateFile(self) -> None:
        """
        A missing certificate file is named.
        """
        missing = self.directory / "nowhere.pem"
        self.assertLoadError(self.keyPath, missing, missing)

    def test_garbageKeyFile(self) -> None:
        """
        A key file with no PEM key is named; so is an empty one, and one
        holding only a certificate.
        """
        for content in [b"garbage\n", b"", pem(self.created.certificate)]:
            self.keyPath.write_bytes(content)
            message = self.assertLoadError(self.keyPath, self.certificatePath, self.keyPath)
            self.assertNotIn(str(self.certificatePath), message)

    def test_garbageCertificateFile(self) -> None:
        """
        A certificate file with no PEM certificate is named; so is an
        empty one, and one holding only a key.
        """
        for content in [b"garbage\n", b"", pem(self.created.key)]:
            self.certificatePath.write_bytes(content)
            message = self.assertLoadError(
                self.keyPath, self.certificatePath, self.certificatePath
            )
            self.assertNotIn(str(self.keyPath), message)

    def test_mismatch(self) -> None:
        """
        A key that is not the certificate's is an error naming both files.
        """
        other = createSelfSignedCertificate(
            self.directory / "other-key.pem", self.directory / "other-cert.pem"
        )
        message = self.assertLoadError(
            self.keyPath, other.certificatePath, self.keyPath, other.certificatePath
        )
        self.assertIn("does not match", message)

    def test_mismatchInOneFile(self) -> None:
        """
        A combined file whose key is not its certificate's is named.
        """
        other = createSelfSignedCertificate(self.directory / "k2", self.directory / "c2")
        path = self.directory / "both.pem"
        path.write_bytes(pem(self.created.key, other.certificate))
        self.assertLoadError(path, None, path)

    def test_encryptedKey(self) -> None:
        """
        An encrypted key is an error that says so.
        """
        self.keyPath.write_bytes(
            self.created.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
        message = self.assertLoadError(self.keyPath, self.certificatePath, self.keyPath)
        self.assertIn("encrypted", message)

    def test_keyThatCannotSign(self) -> None:
        """
        A key TLS cannot sign with (X25519) is an error.
        """
        self.keyPath.write_bytes(pem(x25519.X25519PrivateKey.generate()))
        self.assertLoadError(self.keyPath, self.certificatePath, self.keyPath)


class ServerOptionsTests(SynchronousTestCase):
    """
    L{ServerCertificate.serverOptions}.
    """

    def setUp(self) -> None:
        directory = temporaryDirectory(self)
        self.certificate = createSelfSignedCertificate(
            directory / "k", directory / "c", ["localhost"]
        )
        self.other = createSelfSignedCertificate(
            directory / "k2", directory / "c2", ["other.example"]
        )

    def test_noDeprecationWarning(self) -> None:
        """
        Building the options and their context (with a chain too) warns
        about nothing: the key and certificates reach pyOpenSSL as
        C{cryptography} objects.
        """
        withChain = ServerCertificate(
            self.certificate.key, self.certificate.certificate, (self.other.certificate,)
        )
        for certificate in [self.certificate, withChain]:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                context = certificate.serverOptions().getContext()
            self.assertIsInstance(context, SSL.Context)
        self.assertEqual(self.flushWarnings(), [])

    def test_options(self) -> None:
        """
        The options are a server's: no peer verification, the key and
        certificate given.
        """
        options = self.certificate.serverOptions()
        self.assertIsInstance(options, CertificateOptions)
        self.assertFalse(options.verify)
        self.assertIs(options.certificate, self.certificate.certificate)
        self.assertIs(options.privateKey, self.certificate.key)

    def test_ciphers(self) -> None:
        """
        The TLS 1.2 suites offered are forward secret and AEAD only.
        """
        connection = SSL.Connection(self.certificate.serverOptions().getContext(), None)
        names = [name for name in connection.get_cipher_list() if not name.startswith("TLS_")]
        self.assertTrue(names)
        for name in names:
            self.assertTrue(name.startswith("ECDHE-"), name)
            self.assertTrue("GCM" in name or "CHACHA20" in name, name)


class ServerSide(Protocol):
    """
    Answers each chunk with it in upper case, and reports the connection's
    end to its factory.
    """

    def connectionMade(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.transport.write(data.upper())

    def connectionLost(self, reason: Failure) -> None:
        self.factory.ended.put((self.received, reason))


class ServerFactory(Factory):
    """
    Builds L{ServerSide}s.

    @ivar ended: C{(received, reason)} for each connection that ended.
    """

    protocol = ServerSide

    def __init__(self) -> None:
        self.ended: DeferredQueue = DeferredQueue()


@implementer(IHandshakeListener)
class ClientSide(Protocol):
    """
    Sends C{message}, reads the answer of that length and closes.

    @ivar finished: fires with C{(received, reason)} when the connection
        has ended.
    @ivar version: the TLS version the handshake agreed on, if it ended.
    """

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.received = b""
        self.version = self.cipher = None
        self.finished: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.message)

    def handshakeCompleted(self) -> None:
        connection = self.transport.getHandle()
        self.version = connection.get_protocol_version_name()
        self.cipher = connection.get_cipher_name()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(self.message):
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self.finished.callback((self.received, reason))


@implementer(IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator)
class RawOptions:
    """
    Connections made from one pyOpenSSL context, set up as a test wants
    (an old or weak peer, which Twisted's options will not make).
    """

    def __init__(self, context: SSL.Context) -> None:
        self.context = context

    def clientConnectionForTLS(self, protocol) -> SSL.Connection:
        return SSL.Connection(self.context, None)

    serverConnectionForTLS = clientConnectionForTLS


def oldClientOptions(maximum: int, ciphers: bytes) -> RawOptions:
    """
    @return: options of a client that offers TLS versions up to C{maximum}
        and only C{ciphers}, and verifies nothing.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_VERSION)
    context.set_max_proto_version(maximum)
    context.set_cipher_list(ciphers + b":@SECLEVEL=0")
    return RawOptions(context)


class HandshakeTests(TestCase):
    """
    Real TLS connections over the loopback interface to a server with
    L{ServerCertificate.serverOptions}.
    """

    message = b"hello over tls\n"

    def setUp(self) -> None:
        directory = temporaryDirectory(self)
        self.certificate, _ = ensureSelfSignedCertificate(
            directory, ["localhost", "127.0.0.1", "::1"]
        )
        self.trustRoot = Certificate.loadPEM(self.certificate.certificatePath.read_bytes())

    async def listen(self, options, interface: str = "127.0.0.1") -> tuple[ServerFactory, int]:
        """
        Listen on C{interface} with C{options} (L{ServerCertificate.serverOptions}
        by default) until the test ends.

        @return: the factory and the port number.
        """
        factory = ServerFactory()
        port = await SSL4ServerEndpoint(reactor, 0, options, interface=interface).listen(
            factory
        )
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port

    async def exchange(self, port: int, options, host: str = "127.0.0.1") -> ClientSide:
        """
        Connect to C{port} with C{options}, send C{message} and wait for
        the connection to end.

        @return: the client protocol, with C{received} and C{reason} set.
        """
        client = ClientSide(self.message)
        await connectProtocol(SSL4ClientEndpoint(reactor, host, port, options), client)
        client.received, client.reason = await client.finished
        return client

    def assertExchanged(self, client: ClientSide, version: str = "TLSv1.3") -> None:
        """
        Check that C{client} got the answer to its message over TLS
        C{version} and closed cleanly.
        """
        self.assertEqual(client.received, self.message.upper())
        self.assertTrue(client.reason.check(ConnectionDone), client.reason)
        self.assertEqual(client.version, version)

    async def assertRefused(
        self, factory: ServerFactory, client: ClientSide, serverReason: str
    ) -> None:
        """
        Check that the handshake failed: nothing crossed, both ends lost
        the connection to a TLS error, the server's saying C{serverReason}.
        """
        self.assertIsNone(client.version)
        self.assertEqual(client.received, b"")
        self.assertTrue(client.reason.check(SSL.Error), client.reason)
        received, reason = await factory.ended.get()
        self.assertEqual(received, b"")
        self.assertTrue(reason.check(SSL.Error), reason)
        self.assertIn(serverReason, str(reason.value))

    async def test_trustedByName(self) -> None:
        """
        A client trusting only the certificate accepts it for
        C{localhost}, and data crosses both ways.
        """
        factory, port = await self.listen(self.certificate.serverOptions())
        options = optionsForClientTLS("localhost", trustRoot=self.trustRoot)
        self.assertExchanged(await self.exchange(port, options))
        received, reason = await factory.ended.get()
        self.assertEqual(received, self.message)

    async def test_trustedByAddress(self) -> None:
        """
        A client trusting only the certificate accepts it for
        C{127.0.0.1} (an IP address name).
        """
        _, port = await self.listen(self.certificate.serverOptions())
        options = optionsForClientTLS("127.0.0.1", trustRoot=self.trustRoot)
        self.assertExchanged(await self.exchange(port, options))

    async def test_trustedByIPv6Address(self) -> None:
        """
        Over IPv6, a client trusting only the certificate accepts it for
        C{::1}.
        """
        _, port = await self.listen(self.certificate.serverOptions(), "::1")
        options = optionsForClientTLS("::1", trustRoot=self.trustRoot)
        self.assertExchanged(await self.exchange(port, options, "::1"))

    test_trustedByIPv6Address.skip = NO_IPV6  # type: ignore[attr-defined]

    async def test_otherNameRejected(self) -> None:
        """
        A client verifies the certificate: it is not accepted for a name
        it does not list, and nothing crosses.
        """
        _, port = await self.listen(self.certificate.serverOptions())
        options = optionsForClientTLS("elsewhere.example", trustRoot=self.trustRoot)
        client = await self.exchange(port, options)
        self.assertEqual(client.received, b"")
        self.assertTrue(client.reason.check(VerificationError), client.reason)

    async def test_untrustedRejected(self) -> None:
        """
        A client that trusts another certificate (for the same names)
        rejects this one, and nothing crosses.
        """
        _, port = await self.listen(self.certificate.serverOptions())
        other = createSelfSignedCertificate(
            self.certificate.keyPath.with_name("other-key.pem"),
            self.certificate.keyPath.with_name("other-cert.pem"),
            ["localhost", "127.0.0.1"],
        )
        trustRoot = Certificate.loadPEM(other.certificatePath.read_bytes())
        client = await self.exchange(port, optionsForClientTLS("localhost", trustRoot=trustRoot))
        self.assertEqual(client.received, b"")
        self.assertTrue(client.reason.check(SSL.Error), client.reason)
        self.assertIn("certificate verify failed", str(client.reason.value))

    async def test_tls12Accepted(self) -> None:
        """
        A client that speaks at most TLS 1.2 is served, with a forward
        secret AEAD suite.
        """
        _, port = await self.listen(self.certificate.serverOptions())
        client = await self.exchange(port, oldClientOptions(SSL.TLS1_2_VERSION, b"DEFAULT"))
        self.assertExchanged(client, "TLSv1.2")
        self.assertTrue(client.cipher.startswith("ECDHE-"), client.cipher)
        self.assertTrue("GCM" in client.cipher or "CHACHA20" in client.cipher, client.cipher)

    async def test_tls11Refused(self) -> None:
        """
        A client that speaks at most TLS 1.1 is refused (the same client
        is served by a server that allows TLS 1.1, so it is the server that
        refuses).
        """
        oldClient = oldClientOptions(SSL.TLS1_1_VERSION, b"DEFAULT")
        permissive = SSL.Context(SSL.TLS_METHOD)
        permissive.set_min_proto_version(SSL.TLS1_VERSION)
        permissive.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        permissive.use_certificate(self.certificate.certificate)
        permissive.use_privatekey(self.certificate.key)
        _, controlPort = await self.listen(RawOptions(permissive))
        self.assertExchanged(await self.exchange(controlPort, oldClient), "TLSv1.1")

        factory, port = await self.listen(self.certificate.serverOptions())
        client = await self.exchange(port, oldClient)
        await self.assertRefused(factory, client, "unsupported protocol")

    async def test_cbcSuiteRefused(self) -> None:
        """
        A TLS 1.2 client that offers only a CBC suite is refused (Twisted's
        default options would serve it).
        """
        cbcClient = oldClientOptions(SSL.TLS1_2_VERSION, b"ECDHE-ECDSA-AES128-SHA")
        default = CertificateOptions(
            privateKey=self.certificate.key,  # type: ignore[arg-type]
            certificate=self.certificate.certificate,  # type: ignore[arg-type]
        )
        _, controlPort = await self.listen(default)
        control = await self.exchange(controlPort, cbcClient)
        self.assertExchanged(control, "TLSv1.2")
        self.assertEqual(control.cipher, "ECDHE-ECDSA-AES128-SHA")

        factory, port = await self.listen(self.certificate.serverOptions())
        client = await self.exchange(port, cbcClient)
        await self.assertRefused(factory, client, "no shared cipher")
