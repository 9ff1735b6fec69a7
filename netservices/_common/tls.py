# -*- test-case-name: tests._common.test_tls -*-
"""
TLS for the services: loading a PEM key and certificate, making a
self-signed one when none is given, and the server options built from them.

Keys and certificates are kept as C{cryptography} objects from end to end:
L{ServerCertificate.serverOptions} hands them to Twisted's
C{CertificateOptions} directly (pyOpenSSL takes them as they are), because
the pyOpenSSL C{X509}/C{PKey} paths are deprecated in pyOpenSSL 26 and warn.

The self-signed certificate is an end-entity certificate (C{CA:FALSE}, key
usage C{digitalSignature}, extended key usage C{serverAuth}) that names
itself as its issuer: a client that pins it as its only trust root
(Twisted's C{optionsForClientTLS(name, trustRoot=Certificate)}, Python's
C{ssl} with C{cafile}, C{curl --cacert}) accepts it for each name it lists;
OpenSSL needs no C{CA:TRUE} to take a self-signed certificate in its trust
store as the anchor of a chain of one, even with C{-x509_strict}.

Client certificates (for SASL EXTERNAL) are requested, never required, and
any certificate is accepted: see L{requestAnyClientCertificate} and
L{peerCertificateFingerprint}.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Iterable, Union

import attrs
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from netservices._common.proxy import transportChain

#: The private keys a server certificate may have (those TLS can sign with).
PrivateKey = Union[
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
]

_SIGNING_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)

#: The OpenSSL cipher string of the TLS 1.2 suites a server accepts: forward
#: secret (ECDHE) with an AEAD cipher only.  TLS 1.3 suites are configured
#: apart by OpenSSL and are all of that kind.
TLS12_CIPHERS = "ECDH+AESGCM:ECDH+CHACHA20:!aNULL"

#: The file names L{ensureSelfSignedCertificate} uses in its directory.
KEY_FILE = "tls-key.pem"
CERTIFICATE_FILE = "tls-cert.pem"

#: How far back a new certificate's validity starts, for clocks a little
#: behind ours.
CLOCK_SKEW = datetime.timedelta(hours=1)

_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


@attrs.frozen
class ServerCertificate:
    """
    A server's private key and certificate.

    @ivar key: the private key.
    @ivar certificate: the certificate of C{key}.
    @ivar chain: the certificates that followed the first one in the
        certificate file (intermediates sent along with C{certificate}).
    @ivar keyPath: the file C{key} was loaded from or written to, if any.
    @ivar certificatePath: the file C{certificate} was loaded from or
        written to, if any (the same as C{keyPath} for a combined file).
    """

    key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = attrs.field(default=(), converter=tuple)
    keyPath: Path | None = None
    certificatePath: Path | None = None

    @property
    def fingerprint(self) -> str:
        """
        The SHA-256 fingerprint of C{certificate} (of its DER form) as
        uppercase hex pairs joined by C{:}, as C{openssl x509 -fingerprint
        -sha256} prints it.
        """
        return certificateFingerprint(self.certificate)

    def serverOptions(self, requestClientCertificate: bool = False) -> CertificateOptions:
        """
        @param requestClientCertificate: ask clients for a certificate
            (without requiring one) and accept any; see
            L{requestAnyClientCertificate}.
        @return: options for a TLS server with this key and certificate
            (and C{chain}): TLS 1.2 or later, and on TLS 1.2 only the
            suites of L{TLS12_CIPHERS}.  Every TLS listener of ours uses
            these (C{ssl:}, C{tls:} and the default ones).
        """
        # CertificateOptions is annotated with pyOpenSSL types, but passes
        # them on to pyOpenSSL's Context, which takes cryptography objects
        # (and warns about its own).
        options = CertificateOptions(
            privateKey=self.key,  # type: ignore[arg-type]
            certificate=self.certificate,  # type: ignore[arg-type]
            extraCertChain=list(self.chain),  # type: ignore[arg-type]
            raiseMinimumTo=TLSVersion.TLSv1_2,
            acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(
                TLS12_CIPHERS
            ),
        )
        if requestClientCertificate:
            # CertificateOptions makes its context once and makes every
            # connection from it; its own verify settings can only require
            # a certificate and check it against trusted roots.
            requestAnyClientCertificate(options.getContext())
        return options


@implementer(IOpenSSLContextFactory)
class ReloadableServerOptions:
    """
    The TLS context of a listener whose key and certificate files can be
    read again while it runs (C{reload}): new connections get the new
    certificate, open ones keep theirs.  Twisted's TLS layer asks its
    context factory for a context on every connection, so swapping the
    options behind C{getContext} is all it takes.

    @ivar certificate: the L{ServerCertificate} in use.
    """

    def __init__(self, certificate: ServerCertificate, requestClientCertificate: bool = False) -> None:
        self.certificate = certificate
        self._request = requestClientCertificate
        self._options = certificate.serverOptions(requestClientCertificate)

    def getContext(self):
        """
        @return: the current OpenSSL context.
        """
        return self._options.getContext()

    def reload(self) -> bool:
        """
        Read the key and certificate files again.

        @return: whether the certificate changed.
        @raise ValueError: (one line) if they cannot be used; the current
            certificate stays.
        """
        if self.certificate.keyPath is None:
            return False
        fresh = loadServerCertificate(self.certificate.keyPath, self.certificate.certificatePath)
        if fresh.fingerprint == self.certificate.fingerprint:
            return False
        self._options = fresh.serverOptions(self._request)
        self.certificate = fresh
        return True


def certificateFingerprint(certificate: x509.Certificate) -> str:
    """
    @return: the SHA-256 fingerprint of C{certificate}'s DER form, as
        uppercase hex pairs joined by C{:} (as C{openssl x509 -fingerprint
        -sha256} prints it).
    """
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def _acceptAnyCertificate(
    connection: SSL.Connection, certificate, errorNumber: int, depth: int, ok: int
) -> bool:
    """
    An OpenSSL verify callback that accepts every certificate, whatever
    OpenSSL found wrong with it (self-signed, unknown issuer, expired).
    """
    return True


def requestAnyClientCertificate(context: SSL.Context) -> None:
    """
    Make a server C{context} ask each client for a certificate, go on
    without one if the client has none, and accept any it sends.

    This is safe because the certificate is used for nothing but its
    fingerprint (L{peerCertificateFingerprint}), which SASL EXTERNAL
    compares with the fingerprints the account's owner registered: the TLS
    handshake has proved that the client holds the certificate's private
    key (its CertificateVerify signature), and that is all a registered
    fingerprint needs.  Issuer, chain, dates and names mean nothing here,
    so checking them would only refuse self-signed certificates, which are
    what clients use for this.  A client without a certificate is served
    as before, and how the server proves itself is unchanged.  (Sessions
    are not resumed (Twisted's default), so every connection shows its
    certificate.)
    """
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE, _acceptAnyCertificate)


def peerCertificateFingerprint(transport: object) -> str | None:
    """
    @param transport: a protocol's transport (TLS, or a wrapper around it:
        connection limits, PROXY).
    @return: the fingerprint (see L{certificateFingerprint}) of the
        certificate the client showed in the TLS handshake; L{None} if
        C{transport} is not TLS, the client sent none, or the handshake has
        not finished (ask once data has arrived).
    """
    for layer in transportChain(transport):
        if isinstance(layer, TLSMemoryBIOProtocol):
            connection = layer.getHandle()
            certificate = connection.get_peer_certificate(as_cryptography=True)
            return None if certificate is None else certificateFingerprint(certificate)
    return None


def _readFile(path: Path, what: str) -> bytes:
    """
    @return: the contents of C{path}.
    @raise ValueError: if it cannot be read, naming it as C{what}.
    """
    try:
        return path.read_bytes()
    except OSError as error:
        raise ValueError(
            f"cannot read {what} {path}: {error.strerror or error}"
        ) from None


def publicKeyBytes(publicKey) -> bytes:
    """
    @return: a public key as DER C{SubjectPublicKeyInfo}, to compare keys.
    """
    return publicKey.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def keyMatches(key: PrivateKey, certificate: x509.Certificate) -> bool:
    """
    @return: whether C{certificate} is for C{key}.
    """
    try:
        return publicKeyBytes(key.public_key()) == publicKeyBytes(certificate.public_key())
    except (ValueError, UnsupportedAlgorithm):
        return False


def loadPrivateKey(data: bytes, path: Path) -> PrivateKey:
    """
    @param data: PEM data holding an unencrypted private key (the first
        one is loaded).
    @param path: where C{data} came from, for error messages.
    @raise ValueError: with a one-line message naming C{path}, if there is
        no PEM key, it is encrypted, or it cannot sign.
    """
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError(
            f"TLS key file {path}: the key is encrypted (an unencrypted key is needed)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"TLS key file {path}: no PEM private key found") from None
    if not isinstance(key, _SIGNING_KEYS):
        raise ValueError(f"TLS key file {path}: a {type(key).__name__} cannot sign for TLS")
    return key


def loadCertificates(
    path: str | os.PathLike[str], what: str = "TLS certificate file"
) -> list[x509.Certificate]:
    """
    @return: the PEM certificates in the file C{path}, in order.
    @raise ValueError: with a one-line message naming the file (as
        C{what}), if it cannot be read or holds no PEM certificate.
    """
    path = Path(path)
    return _parseCertificates(_readFile(path, what), path, what)


def _parseCertificates(data: bytes, path: Path, what: str) -> list[x509.Certificate]:
    """
    @return: the PEM certificates in C{data}, read from C{path}.
    @raise ValueError: naming C{path} as C{what}, if there are none.
    """
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise ValueError(f"{what} {path}: no PEM certificate found")
    return certificates


def loadServerCertificate(
    keyPath: str | os.PathLike[str],
    certificatePath: str | os.PathLike[str] | None = None,
) -> ServerCertificate:
    """
    Load a server's key and certificate from PEM files.

    @param keyPath: the file of the unencrypted private key (any PEM key
        format: PKCS#8, traditional RSA or EC).
    @param certificatePath: the file of the certificate, followed by any
        intermediate certificates; L{None} if they are in C{keyPath} too
        (in any order with the key).
    @raise ValueError: with a one-line message naming the file, if a file
        cannot be read, holds no PEM key or certificate, the key is
        encrypted or cannot sign, or the key is not the certificate's.
    """
    keyPath = Path(keyPath)
    certificatePath = keyPath if certificatePath is None else Path(certificatePath)
    keyData = _readFile(keyPath, "TLS key file")
    certificateData = (
        keyData
        if certificatePath == keyPath
        else _readFile(certificatePath, "TLS certificate file")
    )
    key = loadPrivateKey(keyData, keyPath)
    certificate, *chain = _parseCertificates(
        certificateData, certificatePath, "TLS certificate file"
    )
    if not keyMatches(key, certificate):
        where = (
            f"TLS key and certificate file {keyPath}"
            if certificatePath == keyPath
            else f"TLS key file {keyPath} and certificate file {certificatePath}"
        )
        raise ValueError(f"{where}: the key does not match the certificate")
    return ServerCertificate(key, certificate, tuple(chain), keyPath, certificatePath)


def isDNSName(name: str) -> bool:
    """
    @return: whether C{name} is an ASCII DNS host name (letters, digits and
        hyphens in labels of 1 to 63, at most 253 in all; a final dot is
        allowed) and not an IPv4 address.
    """
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253 or not name.isascii():
        return False
    labels = name.split(".")
    if labels[-1].isdigit():
        return False
    return all(_DNS_LABEL.match(label) for label in labels)


def defaultHostnames() -> list[str]:
    """
    @return: the names a self-signed certificate gets when none are given:
        C{localhost}, C{127.0.0.1}, C{::1} and this host's name (if it is a
        DNS name other than C{localhost}).
    """
    names = ["localhost", "127.0.0.1", "::1"]
    hostname = socket.gethostname()
    if isDNSName(hostname) and hostname.rstrip(".").lower() != "localhost":
        names.append(hostname.rstrip("."))
    return names


def _generalName(name: str) -> x509.GeneralName:
    """
    @return: C{name} as a subject alternative name: an IP address if it is
        one, else a DNS name.
    @raise ValueError: if it is neither.
    """
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not isDNSName(name):
        raise ValueError(f"not a DNS name or IP address: {name!r}")
    return x509.DNSName(name.rstrip("."))


def _makeDirectories(directory: Path) -> None:
    """
    Create C{directory} and any missing parents, each with mode C{0700};
    existing ones are left as they are.
    """
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not path.is_dir():
                raise


def _writeAtomically(path: Path, data: bytes, mode: int) -> None:
    """
    Replace C{path} with a file holding C{data}: written to a new
    temporary file in the same directory, created with C{mode} (less the
    umask), then renamed over C{path}.  Readers see the old file or the
    new one, never part of one.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(
        temporary,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        | getattr(os, "O_NOFOLLOW", 0),
        mode,
    )
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def createSelfSignedCertificate(
    keyPath: str | os.PathLike[str],
    certificatePath: str | os.PathLike[str],
    hostnames: Iterable[str] | None = None,
    days: int = 825,
    key: PrivateKey | None = None,
) -> ServerCertificate:
    """
    Make a new EC P-256 key (unless given C{key}) and a self-signed
    certificate for it (signed with SHA-256, valid from an hour ago for
    C{days} days, with a random serial number), and write them as PEM
    files, replacing any there.

    The key file is mode C{0600} from the moment it exists; missing
    directories are created with mode C{0700}.  Each file is replaced
    atomically.

    @param hostnames: the names the certificate is for, each an IP address
        or a DNS name; by default L{defaultHostnames}.  The first is also
        its subject's common name (if it fits in 64 characters).
    @param days: how long it is valid; 825 is the most that Apple's
        clients accept for a TLS server certificate.
    @param key: the key to certify (an RSA or EC key, say), to renew a
        certificate with the same key or to make another kind.
    @raise ValueError: if C{hostnames} is empty or has a name that is
        neither an IP address nor a DNS name.
    @raise TypeError: if C{hostnames} is a string (not a list of them).
    @raise OSError: if the files cannot be written.
    """
    keyPath = Path(keyPath)
    certificatePath = Path(certificatePath)
    if isinstance(hostnames, str):
        raise TypeError(f"hostnames must be a list of names, not a string: {hostnames!r}")
    names = defaultHostnames() if hostnames is None else list(hostnames)
    if not names:
        raise ValueError("a certificate needs at least one host name")
    alternativeNames: list[x509.GeneralName] = []
    for name in names:
        general = _generalName(name)
        if general not in alternativeNames:
            alternativeNames.append(general)
    commonName = names[0].rstrip(".") if len(names[0].rstrip(".")) <= 64 else "netservices"
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternativeNames), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
            critical=False,
        )
        .sign(
            key,
            None
            if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
            else hashes.SHA256(),
        )
    )
    keyPEM = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    certificatePEM = certificate.public_bytes(serialization.Encoding.PEM)
    _makeDirectories(keyPath.parent)
    _makeDirectories(certificatePath.parent)
    if keyPath == certificatePath:
        _writeAtomically(keyPath, keyPEM + certificatePEM, 0o600)
    else:
        _writeAtomically(keyPath, keyPEM, 0o600)
        _writeAtomically(certificatePath, certificatePEM, 0o644)
    return ServerCertificate(key, certificate, (), keyPath, certificatePath)


def ensureSelfSignedCertificate(
    directory: str | os.PathLike[str], hostnames: Iterable[str] | None = None
) -> tuple[ServerCertificate, bool]:
    """
    Load the key and certificate kept in C{directory} (L{KEY_FILE} and
    L{CERTIFICATE_FILE}), or make them with L{createSelfSignedCertificate}
    if either is missing (a pair left half-written is made anew).  The
    directory is created (mode C{0700}) if needed.

    @param hostnames: the names for a new certificate (see
        L{createSelfSignedCertificate}); an existing one is loaded as it is.
    @return: the certificate, and whether it was made now.
    @raise ValueError: if both files exist but cannot be loaded (see
        L{loadServerCertificate}); they are left as they are.
    """
    directory = Path(directory)
    keyPath, certificatePath = directory / KEY_FILE, directory / CERTIFICATE_FILE
    if keyPath.exists() and certificatePath.exists():
        return loadServerCertificate(keyPath, certificatePath), False
    _makeDirectories(directory)
    return createSelfSignedCertificate(keyPath, certificatePath, hostnames), True
