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
import time
import warnings
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
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
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
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
from netservices._common.sni import CertificateDirectory
from netservices._common.tls import (
    CERTIFICATE_FILE,
    KEY_FILE,
    ServerCertificate,
    certificateFingerprint,
    createSelfSignedCertificate,
    defaultHostnames,
    ensureSelfSignedCertificate,
    isDNSName,
    loadServerCertificate,
    peerCertificateFingerprint,
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


def certify(
    names: list[str],
    key=None,
    issuer: tuple | None = None,
    start: datetime.datetime | None = None,
    days: int = 30,
    ca: bool = False,
    commonName: str | None = None,
) -> tuple:
    """
    Make a certificate for the DNS C{names}.

    @param key: its key (by default a new EC P-256 key).
    @param issuer: the key and certificate that sign it (by default it
        signs itself).
    @param start: when it becomes valid (by default an hour ago).
    @param ca: whether it is a CA (for intermediates and roots).
    @param commonName: its subject's common name (by default the first
        name).
    @return: the key and the certificate.
    """
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, commonName or names[0])]
    )
    signer, issuerName = (key, subject) if issuer is None else (issuer[0], issuer[1].subject)
    if start is None:
        start = datetime.datetime.now(datetime.timezone.utc) - ONE_HOUR
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuerName)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in names]),
            critical=False,
        )
    return key, builder.sign(signer, hashes.SHA256())


def replaceFile(path: Path, data: bytes) -> None:
    """
    Replace C{path} (in a directory made if missing) with a new file
    holding C{data}, as renewal tools do: written beside it, then renamed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".new")
    temporary.write_bytes(data)
    os.replace(temporary, path)


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

    def test_givenKey(self) -> None:
        """
        Given a key (RSA here), the certificate is for it, and a second
        one for the same key has another serial number and fingerprint.
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        first = createSelfSignedCertificate(self.directory / "k", self.directory / "c", key=key)
        second = createSelfSignedCertificate(self.directory / "k", self.directory / "c", key=key)
        for created in (first, second):
            self.assertIs(created.key, key)
            created.certificate.verify_directly_issued_by(created.certificate)
        self.assertNotEqual(first.certificate.serial_number, second.certificate.serial_number)
        self.assertNotEqual(first.fingerprint, second.fingerprint)

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
        assertPolicyCiphers(self, self.certificate.serverOptions().getContext())

    def test_noClientCertificateRequest(self) -> None:
        """
        By default clients are not asked for a certificate.
        """
        context = self.certificate.serverOptions().getContext()
        self.assertEqual(context.get_verify_mode(), SSL.VERIFY_NONE)

    def test_clientCertificateRequest(self) -> None:
        """
        With C{requestClientCertificate}, clients are asked for a
        certificate but not required to send one, under the same policy,
        and nothing warns.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            context = self.certificate.serverOptions(requestClientCertificate=True).getContext()
        self.assertEqual(context.get_verify_mode(), SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE)
        assertPolicyCiphers(self, context)


def assertPolicyCiphers(testCase: SynchronousTestCase, context: SSL.Context) -> None:
    """
    Check that the TLS 1.2 suites of a server C{context} are forward
    secret (ECDHE) and AEAD only.
    """
    connection = SSL.Connection(context, None)
    names = [name for name in connection.get_cipher_list() if not name.startswith("TLS_")]
    testCase.assertTrue(names)
    for name in names:
        testCase.assertTrue(name.startswith("ECDHE-"), name)
        testCase.assertTrue("GCM" in name or "CHACHA20" in name, name)


class ServerSide(Protocol):
    """
    Answers each chunk with it in upper case, and reports the connection's
    end to its factory.
    """

    def connectionMade(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        if not self.received:
            self.factory.fingerprints.append(peerCertificateFingerprint(self.transport))
        self.received += data
        self.transport.write(data.upper())

    def connectionLost(self, reason: Failure) -> None:
        self.factory.ended.put((self.received, reason))


class ServerFactory(Factory):
    """
    Builds L{ServerSide}s.

    @ivar ended: C{(received, reason)} for each connection that ended.
    @ivar fingerprints: the client certificate's fingerprint (or L{None})
        seen by each connection when its first data arrived.
    """

    protocol = ServerSide

    def __init__(self) -> None:
        self.ended: DeferredQueue = DeferredQueue()
        self.fingerprints: list[str | None] = []


@implementer(IHandshakeListener)
class ClientSide(Protocol):
    """
    Sends C{message}, reads the answer of that length and closes.

    @ivar finished: fires with C{(received, reason)} when the connection
        has ended.
    @ivar version: the TLS version the handshake agreed on, if it ended.
    @ivar serverCertificate: the certificate the server showed, if the
        handshake ended.
    """

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.received = b""
        self.version = self.cipher = self.serverCertificate = None
        self.finished: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.message)

    def handshakeCompleted(self) -> None:
        connection = self.transport.getHandle()
        self.version = connection.get_protocol_version_name()
        self.cipher = connection.get_cipher_name()
        self.serverCertificate = connection.get_peer_certificate(as_cryptography=True)

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

    def __init__(self, context: SSL.Context, serverName: bytes | None = None) -> None:
        """
        @param serverName: the name a client sends by SNI (none by
            default).
        """
        self.context = context
        self.serverName = serverName

    def clientConnectionForTLS(self, protocol) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        if self.serverName is not None:
            connection.set_tlsext_host_name(self.serverName)
        return connection

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


class LoopbackTLSTestCase(TestCase):
    """
    Helpers for real TLS connections over the loopback interface.
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



class HandshakeTests(LoopbackTLSTestCase):
    """
    Real TLS connections over the loopback interface to a server with
    L{ServerCertificate.serverOptions}.
    """

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

    async def test_staticRSARefused(self) -> None:
        """
        A TLS 1.2 client that offers only static RSA key exchange (no
        forward secrecy, even with AEAD) is refused by a server with an
        RSA certificate (which Twisted's default options would serve).
        """
        directory = temporaryDirectory(self)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        certificate = createSelfSignedCertificate(
            directory / "rsa.pem", directory / "rsa.pem", ["localhost"], key=key
        )
        staticClient = oldClientOptions(SSL.TLS1_2_VERSION, b"AES128-GCM-SHA256:AES128-SHA")
        default = CertificateOptions(
            privateKey=certificate.key,  # type: ignore[arg-type]
            certificate=certificate.certificate,  # type: ignore[arg-type]
        )
        _, controlPort = await self.listen(default)
        control = await self.exchange(controlPort, staticClient)
        self.assertExchanged(control, "TLSv1.2")
        self.assertEqual(control.cipher, "AES128-GCM-SHA256")

        factory, port = await self.listen(certificate.serverOptions())
        client = await self.exchange(port, staticClient)
        await self.assertRefused(factory, client, "no shared cipher")

    def clientWithCertificate(self) -> tuple[CertificateOptions, str]:
        """
        @return: options of a client with a new self-signed certificate,
            and that certificate's fingerprint.
        """
        key, certificate = certify(["client.example"])
        options = CertificateOptions(privateKey=key, certificate=certificate)
        return options, certificateFingerprint(certificate)

    async def test_clientCertificateFingerprint(self) -> None:
        """
        A server that requests client certificates accepts a self-signed
        one, and the server's protocol sees its fingerprint.
        """
        factory, port = await self.listen(
            self.certificate.serverOptions(requestClientCertificate=True)
        )
        options, fingerprint = self.clientWithCertificate()
        self.assertExchanged(await self.exchange(port, options))
        self.assertEqual(factory.fingerprints, [fingerprint])

    async def test_clientCertificateOnTLS12(self) -> None:
        """
        Over TLS 1.2 too, the client's certificate is accepted and seen.
        """
        factory, port = await self.listen(
            self.certificate.serverOptions(requestClientCertificate=True)
        )
        key, certificate = certify(["client.example"])
        options = oldClientOptions(SSL.TLS1_2_VERSION, b"DEFAULT")
        options.context.use_certificate(certificate)
        options.context.use_privatekey(key)
        self.assertExchanged(await self.exchange(port, options), "TLSv1.2")
        self.assertEqual(factory.fingerprints, [certificateFingerprint(certificate)])

    async def test_noClientCertificate(self) -> None:
        """
        A client without a certificate is served as well by a server that
        requests one; its fingerprint is L{None}.
        """
        factory, port = await self.listen(
            self.certificate.serverOptions(requestClientCertificate=True)
        )
        options = optionsForClientTLS("localhost", trustRoot=self.trustRoot)
        self.assertExchanged(await self.exchange(port, options))
        self.assertEqual(factory.fingerprints, [None])

    async def test_clientCertificateNotRequested(self) -> None:
        """
        By default the server does not ask, so a client's certificate is
        not sent and the fingerprint is L{None}.
        """
        factory, port = await self.listen(self.certificate.serverOptions())
        options, _ = self.clientWithCertificate()
        self.assertExchanged(await self.exchange(port, options))
        self.assertEqual(factory.fingerprints, [None])


class PeerFingerprintTests(SynchronousTestCase):
    """
    L{peerCertificateFingerprint} without TLS.
    """

    def test_notTLS(self) -> None:
        """
        A transport that is not TLS (and wraps none) has no fingerprint.
        """
        self.assertIsNone(peerCertificateFingerprint(StringTransport()))
        self.assertIsNone(peerCertificateFingerprint(None))


def fingerprintOf(certificate: x509.Certificate | ServerCertificate) -> str:
    """
    @return: the fingerprint of a certificate, or of a server's.
    """
    if isinstance(certificate, ServerCertificate):
        certificate = certificate.certificate
    return certificateFingerprint(certificate)


class CertificateDirectoryTests(SynchronousTestCase):
    """
    L{CertificateDirectory}: what it serves from a directory, and how it
    follows changes, with an injected clock.
    """

    def setUp(self) -> None:
        self.directory = temporaryDirectory(self)
        self.clock = Clock()
        self.clock.advance(time.time())

    def write(self, name: str, *objects) -> tuple:
        """
        Replace the file C{name} in the directory with C{objects} as PEM.

        @return: C{objects}.
        """
        replaceFile(self.directory / name, pem(*objects))
        return objects

    def load(self, **kwargs) -> CertificateDirectory:
        """
        @return: a L{CertificateDirectory} of the test's directory and
            clock.
        """
        return CertificateDirectory(self.directory, self.clock, **kwargs)

    def assertServes(self, certificates: CertificateDirectory, expected: dict) -> None:
        """
        Check that a client sending each name of C{expected} (a name or
        L{None}) gets the certificate given for it.
        """
        self.assertEqual(
            {name: fingerprintOf(certificates.certificateFor(name)) for name in expected},
            {name: fingerprintOf(certificate) for name, certificate in expected.items()},
        )

    def assertWarned(self, events: list[dict], *problems: str) -> None:
        """
        Check that the warnings among logged C{events} are C{problems},
        each about the directory.
        """
        self.assertEqual(
            [formatEvent(event) for event in events if event["log_level"] == LogLevel.warn],
            [f"TLS certificate directory {self.directory}: {problem}" for problem in problems],
        )

    def test_filesAndNames(self) -> None:
        """
        A key and its certificate in one file, or in two, in the directory
        or below it, serve each DNS name of the certificate (compared
        without case or final dot).
        """
        oneKey, one = self.write("one.pem", *certify(["one.test"]))
        twoKey, two = certify(["two.test"])
        self.write("two-key.pem", twoKey)
        self.write("two-cert.pem", two)
        _, three = self.write(
            "live/three/both.pem", *certify(["three.test", "www.three.test"])
        )
        certificates = self.load()
        self.assertServes(
            certificates,
            {"one.test": one, "two.test": two, "three.test": three,
             "www.three.test": three, "ONE.Test.": one},
        )
        served = certificates.certificateFor("two.test")
        self.assertEqual(served.keyPath, self.directory / "two-key.pem")
        self.assertEqual(served.certificatePath, self.directory / "two-cert.pem")

    def test_onlyPEMFiles(self) -> None:
        """
        Only files whose names end in C{.pem} are read.
        """
        _, one = self.write("one.pem", *certify(["one.test"]))
        self.write("other.crt", *certify(["other.test"]))
        self.assertServes(self.load(), {"other.test": one})

    def test_wildcard(self) -> None:
        """
        A C{*.example.test} certificate serves names one label below
        C{example.test}, and not C{example.test} itself or deeper names.
        """
        _, default = self.write("default.pem", *certify(["default.test"]))
        _, wild = self.write("wild.pem", *certify(["*.example.test"]))
        self.assertServes(
            self.load(),
            {"a.example.test": wild, "example.test": default, "a.b.example.test": default},
        )

    def test_chain(self) -> None:
        """
        Certificates without their key are intermediates, sent after the
        certificate they signed (found by issuer name and signature: one
        with the same name and another key is not sent); the root is not
        sent.
        """
        root = certify([], ca=True, commonName="Root")
        intermediate = certify([], issuer=root, ca=True, commonName="Intermediate")
        impostor = certify([], issuer=root, ca=True, commonName="Intermediate")
        leafKey, leaf = certify(["leaf.test"], issuer=intermediate)
        self.write("leaf.pem", leafKey, leaf)
        self.write("chain.pem", impostor[1], intermediate[1], root[1])
        served = self.load().certificateFor("leaf.test")
        self.assertEqual(served.certificate, leaf)
        self.assertEqual(served.chain, (intermediate[1],))

    def test_defaultFile(self) -> None:
        """
        Clients that send no name, or a name without a certificate, get the
        certificate of C{default.pem}.
        """
        _, a = self.write("a.pem", *certify(["a.test"]))
        _, default = self.write("default.pem", *certify(["default.test"]))
        self.write("z.pem", *certify(["z.test"]))
        self.assertServes(self.load(), {None: default, "unknown.test": default, "a.test": a})

    def test_defaultFirstByPath(self) -> None:
        """
        Without C{default.pem}, the default is the certificate whose file
        comes first by path.
        """
        self.write("b.pem", *certify(["b.test"]))
        _, a = self.write("a/z.pem", *certify(["a.test"]))
        self.assertServes(self.load(), {None: a})

    def test_latestValidWins(self) -> None:
        """
        Of several certificates for one name, the one valid now that became
        valid last is served; one not yet valid is not.
        """
        now = datetime.datetime.now(datetime.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        _, older = certify(["one.test"], key=key, start=now - datetime.timedelta(days=20))
        _, newer = certify(["one.test"], key=key, start=now - datetime.timedelta(days=2))
        _, future = certify(["one.test"], key=key, start=now + datetime.timedelta(days=2))
        self.write("a.pem", key, future, older)
        self.write("b.pem", newer)
        self.assertServes(self.load(), {"one.test": newer})

    def test_missingDirectory(self) -> None:
        """
        A directory that does not exist, or a file, is a one-line
        L{ValueError} naming it.
        """
        (self.directory / "file").write_bytes(b"")
        for path in [self.directory / "nowhere", self.directory / "file"]:
            error = self.assertRaises(ValueError, CertificateDirectory, path, self.clock)
            self.assertIn(str(path), str(error))
            self.assertNotIn("\n", str(error))

    def test_noUsableCertificate(self) -> None:
        """
        A directory with no key and certificate for it is a one-line
        L{ValueError}, with the first problem found.
        """
        key, certificate = certify(["one.test"])
        for name, objects, mention in [
            (None, (), "no usable certificate"),
            ("cert.pem", (certificate,), "no usable certificate"),
            ("key.pem", (key,), "no certificate for its key"),
        ]:
            if name is not None:
                self.write(name, *objects)
            error = self.assertRaises(ValueError, self.load)
            self.assertIn(str(self.directory), str(error))
            self.assertIn(mention, str(error))
            self.assertNotIn("\n", str(error))
            for path in self.directory.iterdir():
                path.unlink()
        (self.directory / "encrypted.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
            + pem(certificate)
        )
        error = self.assertRaises(ValueError, self.load)
        self.assertIn("encrypted", str(error))

    def test_renewalAfterInterval(self) -> None:
        """
        A certificate replaced in its file is served from the first
        connection made once C{recheckInterval} seconds have passed since
        the last check, not before.
        """
        key, old = self.write("one.pem", *certify(["one.test"]))
        certificates = self.load(recheckInterval=10)
        _, new = self.write("one.pem", *certify(["one.test"], key=key))
        self.assertNotEqual(new.serial_number, old.serial_number)
        self.clock.advance(9.5)
        certificates.serverConnectionForTLS(None)
        self.assertServes(certificates, {"one.test": old})
        self.clock.advance(0.5)
        certificates.serverConnectionForTLS(None)
        self.assertServes(certificates, {"one.test": new})

    def test_defaultInterval(self) -> None:
        """
        By default the directory is checked at most every 10 seconds.
        """
        self.write("one.pem", *certify(["one.test"]))
        self.assertEqual(self.load().recheckInterval, 10)

    def test_addedAndRemoved(self) -> None:
        """
        A certificate added is served after a check; one removed is no
        longer served (its name gets the default).
        """
        _, one = self.write("default.pem", *certify(["one.test"]))
        _, two = self.write("two.pem", *certify(["two.test"]))
        certificates = self.load(recheckInterval=0)
        _, three = self.write("three.pem", *certify(["three.test"]))
        (self.directory / "two.pem").unlink()
        certificates.serverConnectionForTLS(None)
        self.assertServes(certificates, {"three.test": three, "two.test": one})

    def test_brokenFileKeepsPrevious(self) -> None:
        """
        A file that no longer loads is logged once, however many checks
        follow, and what it held before is served until it loads again.
        """
        key, old = self.write("one.pem", *certify(["one.test"]))
        certificates = self.load(recheckInterval=0)
        path = self.directory / "one.pem"
        with capturedLogs() as events:
            replaceFile(
                path, pem(key) + b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            )
            for _ in range(3):
                certificates.serverConnectionForTLS(None)
            self.assertServes(certificates, {"one.test": old})
            replaceFile(path, b"garbage")
            certificates.serverConnectionForTLS(None)
            self.assertServes(certificates, {"one.test": old})
            _, new = self.write("one.pem", *certify(["one.test"], key=key))
            certificates.serverConnectionForTLS(None)
            certificates.serverConnectionForTLS(None)
        self.assertServes(certificates, {"one.test": new})
        self.assertWarned(
            events,
            f"TLS certificate file {path}: a certificate does not load;"
            " still using what it held before",
            f"TLS file {path}: no PEM private key or certificate found;"
            " still using what it held before",
        )

    def test_halfwayRenewal(self) -> None:
        """
        While a new key has no certificate yet (the key file was replaced,
        not yet the certificate file), its name keeps the previous
        certificate, and that is logged once.
        """
        self.write("default.pem", *certify(["default.test"]))
        oldKey, old = certify(["two.test"])
        self.write("two-key.pem", oldKey)
        self.write("two-cert.pem", old)
        certificates = self.load(recheckInterval=0)
        newKey, new = certify(["two.test"])
        with capturedLogs() as events:
            self.write("two-key.pem", newKey)
            certificates.serverConnectionForTLS(None)
            certificates.serverConnectionForTLS(None)
            self.assertServes(certificates, {"two.test": old})
            self.write("two-cert.pem", new)
            certificates.serverConnectionForTLS(None)
        self.assertServes(certificates, {"two.test": new})
        self.assertWarned(
            events,
            f"TLS key file {self.directory / 'two-key.pem'}: no certificate for its key",
            f"no certificate for two.test in {self.directory} now;"
            " still serving the previous one",
        )

    def test_emptiedDirectory(self) -> None:
        """
        A directory left without any usable certificate keeps serving the
        previous ones.
        """
        _, one = self.write("one.pem", *certify(["one.test"]))
        certificates = self.load(recheckInterval=0)
        (self.directory / "one.pem").unlink()
        with capturedLogs() as events:
            certificates.serverConnectionForTLS(None)
        self.assertServes(certificates, {"one.test": one, None: one})
        self.assertWarned(
            events,
            f"no usable certificate in {self.directory} now;"
            " still serving the certificates loaded before",
        )

    def test_unchangedNotRead(self) -> None:
        """
        Files whose size and times have not changed (and did not change
        just before they were read) are not read again, and the connection
        context stays the same.
        """
        self.write("one.pem", *certify(["one.test"]))
        past = time.time() - 60
        os.utime(self.directory / "one.pem", (past, past))
        certificates = self.load(recheckInterval=0)
        context = certificates.serverConnectionForTLS(None).get_context()
        reads = []
        self.patch(Path, "read_bytes", lambda path: reads.append(path))
        self.assertIs(certificates.serverConnectionForTLS(None).get_context(), context)
        self.assertEqual(reads, [])

    def test_contexts(self) -> None:
        """
        Every context has the policy of L{ServerCertificate.serverOptions},
        asks for client certificates if told to, and is made without
        warnings.
        """
        self.write("one.pem", *certify(["one.test"]))
        self.write("two.pem", *certify(["two.test"]))
        for request, mode in [
            (False, SSL.VERIFY_NONE),
            (True, SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE),
        ]:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                certificates = self.load(requestClientCertificate=request)
            for name in ["one.test", "two.test"]:
                context = certificates._lookup(name).context
                self.assertEqual(context.get_verify_mode(), mode)
                assertPolicyCiphers(self, context)


class CertificateDirectoryHandshakeTests(LoopbackTLSTestCase):
    """
    Real TLS connections over the loopback interface to a server with a
    L{CertificateDirectory}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.directory = temporaryDirectory(self)
        self.keys = {}
        for name in ["default", "one", "two"]:
            key, certificate = certify([f"{name}.test"])
            self.keys[name] = key
            replaceFile(self.directory / f"{name}.pem", pem(key, certificate))

    def serving(self, name: str) -> str:
        """
        @return: the fingerprint of the certificate in C{name}.pem now.
        """
        path = self.directory / f"{name}.pem"
        return fingerprintOf(x509.load_pem_x509_certificate(path.read_bytes()))

    async def served(self, port: int, serverName: bytes | None) -> str:
        """
        @return: the fingerprint of the certificate that a client sending
            C{serverName} (or none) gets.
        """
        client = await self.exchange(port, RawOptions(SSL.Context(SSL.TLS_METHOD), serverName))
        self.assertExchanged(client)
        return fingerprintOf(client.serverCertificate)

    async def test_byName(self) -> None:
        """
        Each client gets the certificate of the name it sends; a client
        that sends none, or another name, gets the default.
        """
        _, port = await self.listen(CertificateDirectory(self.directory, reactor))
        for serverName, file in [
            (b"one.test", "one"), (b"two.test", "two"), (None, "default"),
            (b"other.test", "default"),
        ]:
            self.assertEqual(await self.served(port, serverName), self.serving(file), serverName)

    async def test_renewed(self) -> None:
        """
        A certificate renewed in its file is served to the next client
        (checking on each connection), without listening again.
        """
        _, port = await self.listen(
            CertificateDirectory(self.directory, reactor, recheckInterval=0)
        )
        before = await self.served(port, b"one.test")
        _, renewed = certify(["one.test"], key=self.keys["one"])
        replaceFile(self.directory / "one.pem", pem(self.keys["one"], renewed))
        after = await self.served(port, b"one.test")
        self.assertNotEqual(after, before)
        self.assertEqual(after, fingerprintOf(renewed))

    async def test_policyByName(self) -> None:
        """
        A client that sends a name still meets the policy: TLS 1.1 and a
        CBC suite are refused.
        """
        for maximum, ciphers, reason in [
            (SSL.TLS1_1_VERSION, b"DEFAULT", "unsupported protocol"),
            (SSL.TLS1_2_VERSION, b"ECDHE-ECDSA-AES128-SHA", "no shared cipher"),
        ]:
            factory, port = await self.listen(CertificateDirectory(self.directory, reactor))
            options = oldClientOptions(maximum, ciphers)
            options.serverName = b"one.test"
            client = await self.exchange(port, options)
            await self.assertRefused(factory, client, reason)

    async def test_clientCertificateByName(self) -> None:
        """
        With C{requestClientCertificate}, a client's self-signed
        certificate is accepted and seen after the switch to the
        certificate of its name.
        """
        factory, port = await self.listen(
            CertificateDirectory(self.directory, reactor, requestClientCertificate=True)
        )
        key, certificate = certify(["client.example"])
        context = SSL.Context(SSL.TLS_METHOD)
        context.use_certificate(certificate)
        context.use_privatekey(key)
        client = await self.exchange(port, RawOptions(context, b"two.test"))
        self.assertExchanged(client)
        self.assertEqual(fingerprintOf(client.serverCertificate), self.serving("two"))
        self.assertEqual(factory.fingerprints, [certificateFingerprint(certificate)])
