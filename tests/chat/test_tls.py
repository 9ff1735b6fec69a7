"""
The TLS matrix against the chat server itself: C{twistd -n netservices
chat} as a child process, listening on C{ssl:} (an RSA certificate) and on
C{tls:DIRECTORY} (certificates by SNI, checked on every connection), with
clients built from raw pyOpenSSL contexts that offer what a test wants.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from netservices._common.tls import certificateFingerprint, createSelfSignedCertificate
from netservices.testing import TwistdTestCase
from tests._common.test_tls import RawOptions, certify, pem, replaceFile

#: Seconds a client may take to register or be refused.
TIMEOUT = 10


@implementer(IHandshakeListener)
class RegisteringClient(Protocol):
    """
    Registers with C{NICK} and C{USER} over TLS and closes once welcomed
    (C{001}).

    @ivar version: the TLS version agreed on, if the handshake ended.
    @ivar cipher: the suite agreed on, likewise.
    @ivar serverFingerprint: the fingerprint of the server's certificate,
        likewise.
    @ivar received: everything the server sent.
    @ivar reason: why the connection ended, once it has.
    @ivar ended: fires (with L{None}) when the connection has ended.
    """

    def __init__(self, nick: str) -> None:
        self.nick = nick
        self.version = self.cipher = self.serverFingerprint = None
        self.received = b""
        self.ended: Deferred = Deferred()

    @property
    def welcomed(self) -> bool:
        """
        Whether the server sent C{001}.
        """
        return any(line.split(b" ")[1:2] == [b"001"] for line in self.received.split(b"\r\n"))

    def connectionMade(self) -> None:
        self.transport.write(f"NICK {self.nick}\r\nUSER {self.nick} 0 * :{self.nick}\r\n".encode())

    def handshakeCompleted(self) -> None:
        connection = self.transport.getHandle()
        self.version = connection.get_protocol_version_name()
        self.cipher = connection.get_cipher_name()
        certificate = connection.get_peer_certificate(as_cryptography=True)
        self.serverFingerprint = certificateFingerprint(certificate)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.welcomed:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self.reason = reason
        self.ended.callback(None)


def clientOptions(
    maximum: int = SSL.TLS1_3_VERSION,
    ciphers: bytes = b"DEFAULT",
    serverName: bytes | None = None,
) -> RawOptions:
    """
    @return: a client that offers TLS 1.0 up to C{maximum}, the TLS 1.2
        (and older) suites C{ciphers}, sends C{serverName} by SNI and
        verifies nothing.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_VERSION)
    context.set_max_proto_version(maximum)
    context.set_cipher_list(ciphers + b":@SECLEVEL=0")
    return RawOptions(context, serverName)


class ChatTLSTests(TwistdTestCase):
    """
    Each test starts the chat server with an C{ssl:} listener (an RSA
    certificate for C{localhost}) and a C{tls:} listener on a directory
    (C{default.pem} for C{default.test}, EC C{one.pem} for C{one.test},
    RSA C{rsa.pem} for C{rsa.test}; C{recheck=0}).
    """

    async def setUp(self) -> None:
        directory = self.temporaryDirectory()
        rsaKey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sslFile = directory / "server.pem"
        createSelfSignedCertificate(sslFile, sslFile, ["localhost"], days=1, key=rsaKey)
        self.certificates = directory / "certificates"
        self.keys = {}
        for name, key in [("default", None), ("one", None), ("rsa", rsaKey)]:
            key, certificate = certify([f"{name}.test"], key=key)
            self.keys[name] = key
            replaceFile(self.certificates / f"{name}.pem", pem(key, certificate))
        server = await self.startServer(
            [
                "chat", "--data-dir", str(directory / "state"), "--server-name", "irc.test",
                "--listen", f"ssl:0:privateKey={sslFile}:interface=127.0.0.1",
                "--listen", f"tls:{self.certificates}:port=0:interface=127.0.0.1:recheck=0",
            ],
            2,
        )
        (_, self.sslPort), (_, self.tlsPort) = server.addresses
        self.server = server

    def serving(self, name: str) -> str:
        """
        @return: the fingerprint of the certificate in the directory's
            C{name}.pem now.
        """
        return certificateFingerprint(
            x509.load_pem_x509_certificate((self.certificates / f"{name}.pem").read_bytes())
        )

    async def register(self, port: int, options: RawOptions, nick: str = "alice"):
        """
        Connect to C{port} with C{options} and try to register.

        @return: the client, once the connection has ended.
        """
        client = RegisteringClient(nick)
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port, options, timeout=TIMEOUT)
        await connectProtocol(endpoint, client)
        await client.ended.addTimeout(TIMEOUT, reactor)
        return client

    def listeners(self, serverName: bytes = b"one.test") -> list[tuple[int, bytes | None]]:
        """
        @return: each listener's port (C{ssl:}, then C{tls:}), and the name
            to send it.
        """
        return [(self.sslPort, None), (self.tlsPort, serverName)]

    def assertWelcomed(self, client: RegisteringClient, version: str) -> None:
        """
        Check that C{client} registered over TLS C{version}, with a forward
        secret AEAD suite.
        """
        self.assertTrue(client.welcomed, client.received)
        self.assertEqual(client.version, version)
        self.assertTrue(client.cipher.startswith(("ECDHE-", "TLS_")), client.cipher)
        self.assertTrue("GCM" in client.cipher or "CHACHA20" in client.cipher, client.cipher)

    def assertRefused(self, client: RegisteringClient) -> None:
        """
        Check that C{client}'s handshake failed: no TLS session, nothing
        received.
        """
        self.assertIsNone(client.version)
        self.assertEqual(client.received, b"")
        self.assertTrue(client.reason.check(SSL.Error), client.reason)

    async def test_versions(self) -> None:
        """
        On both listeners, clients that speak at most TLS 1.0 or 1.1 are
        refused; TLS 1.2 and TLS 1.3 clients register (C{001}).
        """
        for port, name in self.listeners():
            for maximum in [SSL.TLS1_VERSION, SSL.TLS1_1_VERSION]:
                client = await self.register(port, clientOptions(maximum, serverName=name))
                self.assertRefused(client)
            client = await self.register(port, clientOptions(SSL.TLS1_2_VERSION, serverName=name))
            self.assertWelcomed(client, "TLSv1.2")
            client = await self.register(port, clientOptions(serverName=name))
            self.assertWelcomed(client, "TLSv1.3")

    async def test_weakSuitesRefused(self) -> None:
        """
        On both listeners, TLS 1.2 clients that offer only CBC suites, or
        only static RSA key exchange (to RSA certificates, with which it
        would be possible), are refused.
        """
        for port, name in self.listeners(b"rsa.test"):
            for ciphers in [
                b"ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA384",
                b"AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA",
            ]:
                client = await self.register(
                    port, clientOptions(SSL.TLS1_2_VERSION, ciphers, serverName=name)
                )
                self.assertRefused(client)

    async def test_certificateByName(self) -> None:
        """
        On the C{tls:} listener, a client gets the certificate of the name
        it sends, and one that sends none gets C{default.pem}'s; each
        registers.
        """
        for serverName, file in [(b"one.test", "one"), (b"rsa.test", "rsa"), (None, "default")]:
            client = await self.register(self.tlsPort, clientOptions(serverName=serverName))
            self.assertWelcomed(client, "TLSv1.3")
            self.assertEqual(client.serverFingerprint, self.serving(file), serverName)

    async def test_renewedCertificate(self) -> None:
        """
        A certificate renewed in the directory (same key, new serial
        number) is served to the next client, by the same server process.
        """
        original = self.serving("one")
        before = await self.register(self.tlsPort, clientOptions(serverName=b"one.test"))
        key = self.keys["one"]
        _, renewed = certify(["one.test"], key=key)
        replaceFile(self.certificates / "one.pem", pem(key, renewed))
        after = await self.register(self.tlsPort, clientOptions(serverName=b"one.test"), "bob")
        self.assertWelcomed(after, "TLSv1.3")
        self.assertEqual(before.serverFingerprint, original)
        self.assertEqual(after.serverFingerprint, certificateFingerprint(renewed))
        self.assertNotEqual(after.serverFingerprint, original)
