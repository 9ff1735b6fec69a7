# -*- test-case-name: tests._common.test_tls -*-
"""
A directory of PEM files served by SNI, which picks up renewed and added
certificates without a restart: what C{--listen tls:DIRECTORY:port=N}
listens with (see L{netservices._common.listen}).

What a directory holds is what Twisted's own C{tls:} endpoint reads
(C{twisted.protocols._sni}): every file whose name ends in C{.pem}, in the
directory and its subdirectories (symbolic links followed), may hold
private keys and certificates, in any mix and order.  A key is paired with
the certificate of its public key wherever each is (C{key.pem} beside
C{cert.pem}, both in one file, or certbot's C{privkey.pem} and
C{fullchain.pem}); certificates whose key is not there are intermediates,
sent after the certificate they issued (found by issuer name and
signature; self-signed roots are not sent).  A certificate serves the DNS
names of its subject alternative names; C{*.example.com} serves the names
one label below C{example.com}.

Where Twisted's re-reads the directory only when a client asks for a name
it does not know (so a renewed certificate for a known name is never
seen), a L{CertificateDirectory}:

  - checks the directory again when a connection arrives, at most once
    every C{recheckInterval} seconds (10 by default), reading again only
    the files whose size, times or inode changed (and those changed less
    than 2 seconds before they were read, whose times may not show a
    second change);
  - logs a file that does not load once, and keeps using what it held
    before; while a key has no certificate (a renewal caught halfway:
    new key, old certificate), a name that lost its certificate keeps the
    previous one; a directory left with no usable certificate keeps all
    the previous ones;
  - gives clients that send no name (or one it has no certificate for)
    the default certificate: the one in C{default.pem} at the top of the
    directory (its certificate or its key), else the one whose certificate
    file comes first by path (with one certificate, that one);
  - when several certificates serve a name, uses the one valid now with
    the latest start of validity (a renewed one left beside the old);
  - builds every context with the policy of
    L{ServerCertificate.serverOptions} (TLS 1.2 or later, forward-secret
    AEAD suites only on TLS 1.2), from C{cryptography} objects.

Reading happens in the reactor thread: a few C{stat} calls per check, and
reading only what changed (PEM files are a few KiB).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from netservices._common.tls import (
    PrivateKey,
    ServerCertificate,
    certificateFingerprint,
    loadPrivateKey,
    publicKeyBytes,
)

log = Logger()

#: Seconds between two checks of a directory, unless told otherwise.
DEFAULT_RECHECK_INTERVAL = 10.0

#: The file whose certificate clients without SNI get.
DEFAULT_FILE = "default.pem"

#: A file changed less than this many seconds before it was read is read
#: again at the next check: file times are coarser than the kernel's clock,
#: so a second write in the same tick, of the same size, would not show.
_RACY_SECONDS = 2.0

#: The longest chain of intermediates followed.
_MAXIMUM_CHAIN = 8

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)


def readPEMObjects(
    data: bytes, path: Path
) -> tuple[list[PrivateKey], list[x509.Certificate]]:
    """
    @param data: the contents of a PEM file (blocks of other kinds, and
        text around them, are ignored).
    @param path: where C{data} came from, for error messages.
    @return: the private keys and the certificates in C{data}, in order.
    @raise ValueError: with a one-line message naming C{path}, if a key or
        a certificate does not load (an encrypted key, say), or there is
        neither.
    """
    keys: list[PrivateKey] = []
    certificates: list[x509.Certificate] = []
    for match in _PEM_BLOCK.finditer(data):
        label = match.group(1)
        if label.endswith(b"PRIVATE KEY"):
            keys.append(loadPrivateKey(match.group(0), path))
        elif label == b"CERTIFICATE":
            try:
                certificates.append(x509.load_pem_x509_certificate(match.group(0)))
            except ValueError:
                raise ValueError(
                    f"TLS certificate file {path}: a certificate does not load"
                ) from None
    if not keys and not certificates:
        raise ValueError(f"TLS file {path}: no PEM private key or certificate found")
    return keys, certificates


def dnsNames(certificate: x509.Certificate) -> list[str]:
    """
    @return: the DNS names among C{certificate}'s subject alternative
        names, in lower case.
    """
    try:
        extension = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except (x509.ExtensionNotFound, ValueError):
        return []
    return [name.lower().rstrip(".") for name in extension.value.get_values_for_type(x509.DNSName)]


@attrs.frozen
class _PEMFile:
    """
    What a file held when it was last read.

    @ivar signature: its device, inode, size, modification and change
        times then.
    @ivar content: what was read.
    @ivar keys: the keys it held, or what it held last when it loaded.
    @ivar certificates: likewise, its certificates.
    @ivar racy: whether it had changed so recently that it must be read
        again, whatever its signature.
    @ivar error: why its content did not load, if it did not.
    """

    signature: tuple[int, ...]
    content: bytes
    keys: tuple[PrivateKey, ...] = ()
    certificates: tuple[x509.Certificate, ...] = ()
    racy: bool = False
    error: str | None = None


@attrs.frozen
class _Served:
    """
    A certificate being served, with the context that serves it.
    """

    certificate: ServerCertificate
    names: tuple[str, ...]
    context: SSL.Context


def _signature(status: os.stat_result) -> tuple[int, ...]:
    return (
        status.st_dev,
        status.st_ino,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    )


def _issuedBy(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """
    @return: whether C{issuer}'s key signed C{certificate}.
    """
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _chain(
    certificate: x509.Certificate, pool: list[x509.Certificate]
) -> list[x509.Certificate]:
    """
    @return: the intermediates from C{pool} that lead from C{certificate}
        towards a root, nearest first, without the root.
    """
    chain: list[x509.Certificate] = []
    current = certificate
    while len(chain) < _MAXIMUM_CHAIN and current.issuer != current.subject:
        issuers = [
            candidate
            for candidate in pool
            if candidate.subject == current.issuer
            and candidate != current
            and candidate not in chain
            and _issuedBy(current, candidate)
        ]
        if not issuers:
            break
        issuer = max(issuers, key=lambda candidate: candidate.not_valid_after_utc)
        if issuer.issuer == issuer.subject:
            break
        chain.append(issuer)
        current = issuer
    return chain


def _pair(
    files: dict[Path, _PEMFile]
) -> tuple[list[ServerCertificate], list[Path]]:
    """
    Pair the keys of C{files} with their certificates.

    @return: the certificates with their keys and chains, in the order of
        their certificate files' paths; and the files of keys that have no
        certificate.
    """
    keys: dict[bytes, tuple[Path, PrivateKey]] = {}
    certificates: list[tuple[Path, x509.Certificate]] = []
    seen = set()
    for path in sorted(files):
        for key in files[path].keys:
            keys.setdefault(publicKeyBytes(key.public_key()), (path, key))
        for certificate in files[path].certificates:
            fingerprint = certificateFingerprint(certificate)
            if fingerprint not in seen:
                seen.add(fingerprint)
                certificates.append((path, certificate))
    leaves = []
    pool = []
    used = set()
    for path, certificate in certificates:
        try:
            public = publicKeyBytes(certificate.public_key())
        except (ValueError, UnsupportedAlgorithm):
            public = b""
        if public in keys:
            used.add(public)
            leaves.append((path, certificate, keys[public]))
        else:
            pool.append(certificate)
    paired = [
        ServerCertificate(key, certificate, tuple(_chain(certificate, pool)), keyPath, path)
        for path, certificate, (keyPath, key) in leaves
    ]
    unused = sorted({path for public, (path, _) in keys.items() if public not in used})
    return paired, unused


def _pemFiles(directory: Path, problems: set[str]) -> list[Path]:
    """
    @return: the C{.pem} files in C{directory} and its subdirectories, by
        path; a subdirectory that cannot be read is a problem.
    @raise OSError: if C{directory} cannot be read.
    """
    found: list[Path] = []
    visited: set[str] = set()

    def visit(folder: Path) -> None:
        real = os.path.realpath(folder)
        if real in visited:
            return
        visited.add(real)
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            path = Path(entry.path)
            try:
                if entry.is_dir():
                    visit(path)
                elif entry.name.endswith(".pem") and entry.is_file():
                    found.append(path)
            except OSError as error:
                problems.add(f"cannot read {path}: {error.strerror or error}")

    visit(directory)
    return found


@implementer(IOpenSSLServerConnectionCreator)
class CertificateDirectory:
    """
    Makes TLS server connections that serve the certificates of a
    directory by SNI, checking the directory again at most once every
    C{recheckInterval} seconds (see the module's documentation).

    @ivar directory: the directory.
    @ivar clock: tells when to check again (the reactor).
    @ivar recheckInterval: seconds between two checks; 0 checks on every
        connection.
    @ivar requestClientCertificate: whether clients are asked for a
        certificate (see L{netservices._common.tls.requestAnyClientCertificate}).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        clock: IReactorTime,
        recheckInterval: float = DEFAULT_RECHECK_INTERVAL,
        requestClientCertificate: bool = False,
    ) -> None:
        """
        Load the directory.

        @raise ValueError: with a one-line message, if C{directory} is not
            a readable directory or holds no usable certificate (a key and
            its certificate).
        """
        self.directory = Path(directory).absolute()
        self.clock = clock
        self.recheckInterval = recheckInterval
        self.requestClientCertificate = requestClientCertificate
        self._files: dict[Path, _PEMFile] = {}
        self._served: dict[tuple[str, ...], _Served] = {}
        self._byName: dict[str, _Served] = {}
        self._default: _Served | None = None
        self._problems: set[str] = set()
        if not self.directory.is_dir():
            problem = "no such directory" if not self.directory.exists() else "not a directory"
            raise ValueError(f"TLS certificate directory {self.directory}: {problem}")
        self._lastCheck = clock.seconds()
        self.check()
        if self._default is None:
            reasons = sorted(self._problems)
            raise ValueError(
                f"TLS certificate directory {self.directory}: no usable certificate"
                " (a .pem file with a private key, and its certificate in the same"
                " or another .pem file)" + (f"; {reasons[0]}" if reasons else "")
            )

    def serverConnectionForTLS(self, protocol) -> SSL.Connection:
        """
        Check the directory if it is time to, and make a connection that
        starts with the default certificate and switches to the one for
        the name the client sends.
        """
        self.checkIfDue()
        assert self._default is not None
        return SSL.Connection(self._default.context, None)

    def checkIfDue(self) -> None:
        """
        Check the directory if C{recheckInterval} seconds have passed since
        the last check (or the clock went back).
        """
        now = self.clock.seconds()
        if self.recheckInterval <= now - self._lastCheck or now < self._lastCheck:
            self._lastCheck = now
            try:
                self.check()
            except Exception:
                log.failure("while checking TLS certificate directory {directory}",
                            directory=str(self.directory))

    def certificateFor(self, serverName: str | None) -> ServerCertificate:
        """
        @return: the certificate a client that sends C{serverName} (or
            none) gets now.
        """
        served = self._lookup(serverName) if serverName else None
        if served is None:
            served = self._default
        assert served is not None
        return served.certificate

    def _lookup(self, serverName: str) -> _Served | None:
        name = serverName.lower().rstrip(".")
        served = self._byName.get(name)
        if served is None and "." in name:
            served = self._byName.get("*." + name.split(".", 1)[1])
        return served

    def _selectContext(self, connection: SSL.Connection) -> None:
        """
        The server name callback of every context: switch C{connection} to
        the context of the name the client sent, if there is one.
        """
        try:
            name = connection.get_servername()
            served = self._lookup(name.decode("ascii", "replace")) if name else None
            if served is not None:
                connection.set_context(served.context)
        except Exception:
            log.failure("while choosing a TLS certificate by name")

    def check(self) -> None:
        """
        Read the directory again now: load new and changed files, forget
        removed ones, and serve what they hold from the next connection on.
        New problems are logged.
        """
        problems: set[str] = set()
        try:
            paths = _pemFiles(self.directory, problems)
        except OSError as error:
            kept = "; still serving the certificates loaded before" if self._default else ""
            problems.add(f"cannot read {self.directory}: {error.strerror or error}{kept}")
            self._report(problems)
            return
        wallClock = time.time()
        files = {}
        for path in paths:
            loaded = self._readFile(path, wallClock)
            if loaded is not None:
                files[path] = loaded
                if loaded.error is not None:
                    problems.add(loaded.error)
        certificates, unusedKeys = _pair(files)
        for path in unusedKeys:
            problems.add(f"TLS key file {path}: no certificate for its key")
        if not certificates:
            if self._default is not None:
                problems.add(
                    f"no usable certificate in {self.directory} now;"
                    " still serving the certificates loaded before"
                )
            self._report(problems)
            return

        byName: dict[str, _Served] = {}
        servedNow: dict[tuple[str, ...], _Served] = {}
        ranked = sorted(certificates, key=self._rank, reverse=True)
        for certificate in ranked:
            served = self._serve(certificate)
            servedNow[self._identity(certificate)] = served
            for name in served.names:
                byName.setdefault(name, served)
        if unusedKeys:
            for name, served in self._byName.items():
                if name not in byName:
                    byName[name] = served
                    servedNow[self._identity(served.certificate)] = served
                    problems.add(
                        f"no certificate for {name} in {self.directory} now;"
                        " still serving the previous one"
                    )
        top = self.directory / DEFAULT_FILE
        named = [c for c in ranked if top in (c.certificatePath, c.keyPath)]
        if named:
            default = named[0]
        else:
            default = min(
                certificates,
                key=lambda c: (str(c.certificatePath), certificateFingerprint(c.certificate)),
            )
        before = self._default and self._identity(self._default.certificate)
        if self._identity(default) != before:
            log.info(
                "TLS certificate directory {directory}: clients without SNI get {path}",
                directory=str(self.directory),
                path=str(default.certificatePath),
            )
        self._files = files
        self._byName = byName
        self._served = servedNow
        self._default = servedNow[self._identity(default)]
        self._report(problems)

    def _rank(self, certificate: ServerCertificate) -> tuple:
        """
        @return: what orders certificates for one name, best last: valid
            now, then issued last, then valid longest.
        """
        now = self.clock.seconds()
        subject = certificate.certificate
        valid = (
            subject.not_valid_before_utc.timestamp()
            <= now
            <= subject.not_valid_after_utc.timestamp()
        )
        return (valid, subject.not_valid_before_utc, subject.not_valid_after_utc)

    @staticmethod
    def _identity(certificate: ServerCertificate) -> tuple[str, ...]:
        return tuple(
            certificateFingerprint(c) for c in (certificate.certificate, *certificate.chain)
        )

    def _serve(self, certificate: ServerCertificate) -> _Served:
        """
        @return: what serves C{certificate}: the context already serving
            it (with its files as found now), or a new one (logged).
        """
        served = self._served.get(self._identity(certificate))
        if served is not None:
            return attrs.evolve(served, certificate=certificate)
        context = certificate.serverOptions(self.requestClientCertificate).getContext()
        context.set_tlsext_servername_callback(self._selectContext)
        names = tuple(dnsNames(certificate.certificate))
        log.info(
            "TLS certificate directory {directory}: serving {names} with {path}"
            " (SHA-256 fingerprint {fingerprint})",
            directory=str(self.directory),
            names=", ".join(names) or "no DNS name",
            path=str(certificate.certificatePath),
            fingerprint=certificate.fingerprint,
        )
        return _Served(certificate, names, context)

    def _readFile(self, path: Path, wallClock: float) -> _PEMFile | None:
        """
        @return: what C{path} holds: as last read if it has not changed,
            else read again; with its previous keys and certificates (and
            an error) if it no longer loads; L{None} if it is gone.
        """
        previous = self._files.get(path)
        try:
            status = path.stat()
        except FileNotFoundError:
            return None
        except OSError as error:
            return self._failed(previous, (), b"", f"cannot read {path}: {error.strerror}")
        signature = _signature(status)
        if previous is not None and previous.signature == signature and not previous.racy:
            return previous
        racy = abs(wallClock - status.st_mtime_ns / 1e9) < _RACY_SECONDS
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            return self._failed(previous, signature, b"", f"cannot read {path}: {error.strerror}")
        if previous is not None and data == previous.content:
            return attrs.evolve(previous, signature=signature, racy=racy)
        try:
            keys, certificates = readPEMObjects(data, path)
        except ValueError as error:
            return self._failed(previous, signature, data, str(error), racy)
        return _PEMFile(signature, data, tuple(keys), tuple(certificates), racy)

    @staticmethod
    def _failed(
        previous: _PEMFile | None,
        signature: tuple[int, ...],
        data: bytes,
        error: str,
        racy: bool = True,
    ) -> _PEMFile:
        """
        @return: a file that did not load: with what it held before, if it
            ever loaded.
        """
        if previous is not None and (previous.keys or previous.certificates):
            return _PEMFile(
                signature, data, previous.keys, previous.certificates, racy,
                f"{error}; still using what it held before",
            )
        return _PEMFile(signature, data, racy=racy, error=f"{error}; skipped")

    def _report(self, problems: set[str]) -> None:
        """
        Log the problems that the last check did not have.
        """
        for problem in sorted(problems - self._problems):
            log.warn("TLS certificate directory {directory}: {problem}",
                     directory=str(self.directory), problem=problem)
        self._problems = problems
