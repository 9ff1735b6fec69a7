# -*- test-case-name: tests._common.test_listen -*-
"""
Listening, written once for every service: C{--listen} descriptions checked
while options are parsed, one service per listener, startup errors as one
line, and every bound address logged with its real port.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import attrs
from OpenSSL.crypto import Error as OpenSSLError
from twisted.application import service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
    wrapServerTLS,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.logger import Logger
from twisted.python import usage
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.python.failure import Failure

from netservices._common.addresses import joinHostPort, parseIP
from netservices._common.datagram import adoptWithInfo, listenWithInfo
from netservices._common.eager import eagerEquivalent
from netservices._common.limits import ConnectionLimits
from netservices._common.proxy import ProxyHeaderEndpoint, proxyThenTLSEndpoint
from netservices._common.sni import DEFAULT_RECHECK_INTERVAL, CertificateDirectory
from netservices._common.tls import loadCertificates, loadServerCertificate

log = Logger()

STREAM_HELP = """\
Listen on this endpoint description; repeatable.  Examples:
tcp:7007  tcp:7007:interface=127.0.0.1  tcp6:7007:interface=\\:\\:
(IPv6 and IPv4)  ssl:7443:privateKey=key.pem:certKey=cert.pem
tls:/etc/certs:port=7443[:interface=ADDR][:backlog=N][:recheck=S] (the
certificates of a directory of PEM files, picked by SNI, default.pem for
clients without; renewed ones are served within S seconds, default 10;
interface \\:\\: by default)  unix:/run/x.sock  systemd:domain=INET:index=0
haproxy:tcp:7007 (a PROXY v1/v2 header first)
haproxy-ssl:7443:privateKey=key.pem (a cleartext PROXY header, then TLS:
what HAProxy's send-proxy sends).  Every TLS listener takes TLS 1.2 and
1.3 only, with forward-secret AEAD suites only on TLS 1.2."""

DATAGRAM_HELP = """\
Listen on this UDP address; repeatable.  udp:PORT[:interface=ADDR], e.g.
udp:3478 (all IPv4 addresses), udp:3478:interface=\\:\\: (IPv6 and IPv4),
udp:3478:interface=\\:\\:1.  Escape colons in ADDR with a backslash."""


def parseStreamDescription(
    reactor,
    description: str,
    eagerWrites: bool = False,
    requestClientCertificate: bool = False,
) -> IStreamServerEndpoint:
    """
    Parse a server endpoint description as Twisted's C{serverFromString}
    does, except that C{haproxy:} connects the service only after the PROXY
    header (so the peer is known from the start), C{haproxy-ssl:} takes
    the header before TLS, and TLS listeners are our own: C{ssl:} (the
    options of Twisted's, less C{sslmethod} and C{dhParameters}) and
    C{tls:DIRECTORY} (L{CertificateDirectory}) take the policy of
    L{netservices._common.tls.ServerCertificate.serverOptions}, which
    Twisted's C{ssl:} (CBC and static RSA suites on TLS 1.2) and C{tls:}
    (the same, and renewed certificates never seen) do not.

    @param eagerWrites: listen on C{tcp:}/C{tcp6:} with transports that send
        at once when they can (L{netservices._common.eager}).
    @param requestClientCertificate: TLS listeners ask clients for a
        certificate (see L{netservices._common.tls.requestAnyClientCertificate}).

    @raise Exception: anything C{serverFromString} raises for a bad
        description, including C{OSError} for a missing file; L{ValueError}
        for a bad TLS description.
    """
    kind, _, rest = description.partition(":")
    if kind == "haproxy":
        return ProxyHeaderEndpoint(
            parseStreamDescription(reactor, rest, eagerWrites, requestClientCertificate),
            reactor,
        )
    if kind == "haproxy-ssl":
        return proxyThenTLSEndpoint(reactor, _parseSSL(reactor, rest, requestClientCertificate))
    if kind == "ssl":
        return _parseSSL(reactor, rest, requestClientCertificate)
    if kind == "tls":
        return _parseCertificateDirectory(reactor, rest, requestClientCertificate)
    endpoint = serverFromString(reactor, description)
    return eagerEquivalent(reactor, endpoint) if eagerWrites else endpoint


def _namedFields(kind: str, fields: list[str], names: Sequence[str]) -> dict[str, str]:
    """
    @return: C{fields} (C{name=value} each) as a dictionary.
    @raise ValueError: for a field that is not one of C{names}, or one
        given twice.
    """
    values: dict[str, str] = {}
    for field in fields:
        name, equals, value = field.partition("=")
        if name in ("sslmethod", "dhParameters"):
            raise ValueError(
                f"{name}= is not supported: every TLS listener takes TLS 1.2 and 1.3,"
                " with ECDHE key exchange"
            )
        if not equals or name not in names:
            expected = ", ".join(f"{n}=" for n in names)
            raise ValueError(f"unknown {kind}: option {field!r} (expected {expected})")
        if name in values:
            raise ValueError(f"{name}= given twice")
        values[name] = value
    return values


def _tcpSettings(values: dict[str, str], defaultInterface: str) -> tuple[int, int, str]:
    """
    @return: the port, backlog and interface of parsed C{values}.
    @raise ValueError: if one is missing (the port) or bad.
    """
    if "port" not in values:
        raise ValueError("port=N is needed")
    try:
        port = portNumber(values["port"])
        backlog = positiveInt(values.get("backlog", "50"))
    except ValueError as error:
        raise ValueError(f"bad port= or backlog=: {error}") from None
    interface = values.get("interface", defaultInterface)
    if interface and parseIP(interface) is None:
        raise ValueError(f"interface {interface!r} is not an IP address")
    return port, backlog, interface


def _parseSSL(reactor, rest: str, requestClientCertificate: bool) -> SSL4ServerEndpoint:
    """
    Parse the rest of C{ssl:PORT[:privateKey=FILE][:certKey=FILE]
    [:extraCertChain=FILE][:interface=ADDR][:backlog=N]}, whose options
    mean what they mean to Twisted (C{privateKey} defaults to
    C{server.pem} and may hold the certificate too; C{extraCertChain}
    adds intermediates).
    """
    fields = splitDescription(rest)
    if fields and "=" not in fields[0]:
        fields[0] = "port=" + fields[0]
    values = _namedFields(
        "ssl",
        fields,
        ("port", "privateKey", "certKey", "extraCertChain", "interface", "backlog"),
    )
    port, backlog, interface = _tcpSettings(values, "")
    certificate = loadServerCertificate(
        values.get("privateKey", "server.pem"), values.get("certKey")
    )
    if "extraCertChain" in values:
        extra = loadCertificates(values["extraCertChain"], "TLS certificate chain file")
        certificate = attrs.evolve(certificate, chain=certificate.chain + tuple(extra))
    options = certificate.serverOptions(requestClientCertificate)
    return SSL4ServerEndpoint(reactor, port, options, backlog, interface)


def _parseCertificateDirectory(
    reactor, rest: str, requestClientCertificate: bool
) -> IStreamServerEndpoint:
    """
    Parse the rest of C{tls:DIRECTORY:port=N[:interface=ADDR][:backlog=N]
    [:recheck=SECONDS]} (C{interface} defaults to C{::}, as for Twisted's
    C{tls:}; C{recheck} to 10 seconds) and load the directory.
    """
    directory, *fields = splitDescription(rest)
    if not directory:
        raise ValueError("expected tls:DIRECTORY:port=N")
    if fields and "=" not in fields[0]:
        fields[0] = "port=" + fields[0]
    values = _namedFields("tls", fields, ("port", "interface", "backlog", "recheck"))
    port, backlog, interface = _tcpSettings(values, "::")
    try:
        recheck = nonNegativeFloat(values.get("recheck", str(DEFAULT_RECHECK_INTERVAL)))
    except ValueError as error:
        raise ValueError(f"bad recheck=: {error}") from None
    certificates = CertificateDirectory(directory, reactor, recheck, requestClientCertificate)
    return wrapServerTLS(certificates, TCP6ServerEndpoint(reactor, port, backlog, interface))


@attrs.frozen
class DatagramAddress:
    """
    Where a UDP service listens.

    @ivar fd: a bound socket to listen on instead (inherited from a
        supervisor, see L{netservices._common.workers}), or L{None}.
    """

    port: int
    interface: str = ""
    fd: int | None = None


def splitDescription(description: str) -> list[str]:
    fields = re.split(r"(?<!\\):", description)
    return [f.replace("\\:", ":").replace("\\\\", "\\") for f in fields]


def parseDatagramDescription(description: str) -> DatagramAddress:
    """
    Parse C{udp:PORT[:interface=ADDR]}.

    @raise ValueError: with a message fit for the user.
    """
    kind, *fields = splitDescription(description)
    if kind != "udp" or not fields:
        raise ValueError("expected udp:PORT[:interface=ADDR]")
    port, *options = fields
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"bad port {port!r}: expected 0-65535")
    interface = ""
    for option in options:
        name, _, value = option.partition("=")
        if name != "interface":
            raise ValueError(f"unknown option {name!r}: only interface=ADDR")
        if parseIP(value) is None:
            raise ValueError(f"interface {value!r} is not an IP address")
        interface = value
    return DatagramAddress(int(port), interface)


def describeAddress(address: object) -> str:
    """
    @return: a bound address as C{"tcp 127.0.0.1:7007"}, C{"udp [::1]:9000"}
        or C{"unix /path"}; the same form tests look for in the log.
    """
    if isinstance(address, (IPv4Address, IPv6Address)):
        return f"{address.type.lower()} {joinHostPort(address.host, address.port)}"
    name = getattr(address, "name", None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return f"unix {name}" if name is not None else str(address)


def numberOption(
    kind: type, accept: Callable[[float], bool], description: str, note: str = ""
) -> Callable[[str], float]:
    """
    Make a coercer for C{usage.Options} parameters.

    @param kind: C{int} or C{float}.
    @param accept: whether a parsed value is allowed.
    @param description: what is allowed, for the error message.
    @param note: appended to the option's help.
    """

    def coerce(value: str):
        try:
            number = kind(value)
        except ValueError:
            number = None
        if number is None or number != number or not accept(number):
            raise ValueError(f"{value!r} is not {description}")
        return number

    coerce.__doc__ = f"Coerce an option value to {description}."
    if note:
        coerce.coerceDoc = note  # type: ignore[attr-defined]
    return coerce


positiveInt = numberOption(int, lambda n: n >= 1, "an integer of at least 1", "At least 1.")
nonNegativeInt = numberOption(
    int, lambda n: n >= 0, "an integer of at least 0", "0 means no limit."
)
nonNegativeFloat = numberOption(
    float, lambda n: 0 <= n < float("inf"), "a finite number of at least 0"
)
positiveFloat = numberOption(
    float, lambda n: 0 < n < float("inf"), "a finite number above 0"
)
portNumber = numberOption(int, lambda n: 0 <= n <= 65535, "a port number (0-65535)")


def defaultOf(cls, name: str):
    return attrs.fields_dict(cls)[name].default


def helpText(method):
    """
    Decorate an C{opt_} method so that its docstring reads as one paragraph
    in C{--help} (usage.Options keeps the docstring's indentation).
    """
    method.__doc__ = " ".join((method.__doc__ or "").split())
    return method


class ListenOptions(usage.Options):
    """
    Options shared by every service: C{--listen} (repeatable) and C{--port}.

    Subclasses set C{defaultListen}, the description used when neither is
    given, and C{portTemplate}, what C{--port N} stands for.  After parsing,
    C{self["listen"]} holds the descriptions and C{self["endpoints"]} what
    they were parsed into.

    @ivar reactor: the reactor used to parse descriptions (the global one
        when L{None}).
    @ivar eagerWrites: whether plain TCP listeners use eager-writing
        transports.
    @ivar requestClientCertificate: whether TLS listeners ask clients for
        a certificate (and accept any: only its fingerprint is for use).
    """

    defaultListen: str = ""
    portTemplate: str = ""
    reactor = None
    eagerWrites = False
    requestClientCertificate = False

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        self["listen"].append(description)

    opt_listen.__doc__ = STREAM_HELP

    @helpText
    def opt_port(self, port: str) -> None:
        """
        Shorthand for the default listener on another port (see the end of
        this text).
        """
        try:
            number = portNumber(port)
        except ValueError:
            raise usage.UsageError(f"--port {port!r}: expected a port number 0-65535")
        self["listen"].append(self.portTemplate.format(port=number))

    def getReactor(self):
        """
        @return: the reactor to parse descriptions with.
        """
        if self.reactor is None:
            from twisted.internet import reactor

            return reactor
        return self.reactor

    def parseDescription(self, description: str):
        """
        Parse one listen description; subclasses for other transports
        override this.
        """
        return parseStreamDescription(
            self.getReactor(), description, self.eagerWrites, self.requestClientCertificate
        )

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [self.defaultListen]
        endpoints = []
        for description in self["listen"]:
            try:
                endpoints.append(self.parseDescription(description))
            except Exception as e:
                raise usage.UsageError(f"--listen {description!r}: {errorText(e)}")
        self["endpoints"] = endpoints
        super().postOptions()

    def getUsage(self, width=None):
        return (
            super().getUsage(width)
            + f"\nWithout --listen or --port: {self.defaultListen}\n"
            + f"--port N means: {self.portTemplate.format(port='N')}\n"
        )


class DatagramListenOptions(ListenOptions):
    """
    L{ListenOptions} for UDP services: descriptions are
    C{udp:PORT[:interface=ADDR]}.
    """

    def opt_listen(self, description: str) -> None:
        self["listen"].append(description)

    opt_listen.__doc__ = DATAGRAM_HELP

    def parseDescription(self, description: str) -> DatagramAddress:
        return parseDatagramDescription(description)


class ConnectionCapOptions(usage.Options):
    """
    The global and per-peer connection caps of L{ConnectionLimits}, for
    services that time out idle clients their own way (chat uses PING).
    """

    optParameters = [
        [
            "max-connections",
            None,
            defaultOf(ConnectionLimits, "maxConnections"),
            "Connections open at once, over all listeners.",
            nonNegativeInt,
        ],
        [
            "max-per-peer",
            None,
            defaultOf(ConnectionLimits, "maxPerPeer"),
            "Connections open at once from one IPv4 address or IPv6 /64.",
            nonNegativeInt,
        ],
    ]

    def connectionLimits(self) -> ConnectionLimits:
        """
        @return: the limits chosen on the command line.
        """
        return ConnectionLimits(
            maxConnections=self["max-connections"],
            maxPerPeer=self["max-per-peer"],
            idleTimeout=self.get("idle-timeout", 0.0),
        )


class ConnectionLimitOptions(ConnectionCapOptions):
    """
    Options for L{ConnectionLimits}; mixed into stream services' options.
    """

    optParameters = [
        [
            "idle-timeout",
            None,
            defaultOf(ConnectionLimits, "idleTimeout"),
            "Seconds without data from the client before it is disconnected"
            " (0: never).",
            nonNegativeFloat,
        ],
    ]


def errorText(error: BaseException) -> str:
    """
    @return: an exception as one line for the user, without the noise of
        C{OSError}'s tuple form.
    """
    if isinstance(error, CannotListenError):
        inner = error.socketError
        reason = getattr(inner, "strerror", None) or str(inner)
        return reason
    if isinstance(error, OSError) and error.strerror:
        name = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{name}"
    if isinstance(error, OpenSSLError):
        # pyOpenSSL shows a list of (library, function, reason) tuples.
        reasons = [entry[2] for entry in (error.args[0] if error.args else []) if len(entry) > 2]
        return "not a usable key or certificate (" + (", ".join(r for r in reasons if r) or "OpenSSL error") + ")"
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, TypeError) and "multiple values" in text:
        # serverFromString splits on every unescaped colon.
        text += " (escape colons inside values: interface=\\:\\:1)"
    return text


class BaseListener(service.Service):
    """
    Listens while running.  Binding happens in C{privilegedStartService}
    (before twistd drops privileges, so ports below 1024 work) or, under
    C{twist}, which calls only C{startService}, there.  A failure to bind
    at startup is a one-line L{SystemExit}.

    @ivar port: the listening port once bound.
    """

    port = None
    _pending: Deferred | None = None
    _startupError: str | None = None
    _inStartup = False

    def __init__(self, description: str, reactor) -> None:
        self.description = description
        self.reactor = reactor

    def _bind(self):
        """
        @return: the bound port, or a L{Deferred} firing with it.
        """
        raise NotImplementedError()

    def _boundPort(self, port) -> None:
        """
        Called with the port once bound.
        """

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._start()

    def startService(self) -> None:
        super().startService()
        self._start()

    def _start(self) -> None:
        if self.port is not None or self._pending is not None:
            return
        self._inStartup, self._startupError = True, None
        self._pending = maybeDeferred(self._bind)
        self._pending.addCallbacks(self._bound, self._failed)
        self._inStartup = False
        if self._startupError is not None:
            raise SystemExit(self._startupError)

    def _bound(self, port) -> None:
        self._pending, self.port = None, port
        self._boundPort(port)
        log.info(
            "listening on {address} ({description})",
            address=describeAddress(port.getHost()),
            description=self.description,
        )

    def _failed(self, failure: Failure) -> None:
        self._pending = None
        if failure.check(CancelledError):
            return
        message = (
            f"netservices: cannot listen on {self.description}: "
            f"{errorText(failure.value)}"
        )
        if self._inStartup:
            self._startupError = message
        else:
            # An endpoint that binds later (none of Twisted's do) failed
            # after startup: nothing to exit from but the reactor.
            log.critical(message)
            self.reactor.stop()

    def _unbind(self, port):
        """
        Stop listening on C{port}.
        """
        return port.stopListening()

    def stopService(self):
        super().stopService()
        if self._pending is not None:
            self._pending.cancel()
        port, self.port = self.port, None
        if port is not None:
            return self._unbind(port)


class StreamListener(BaseListener):
    """
    Listens on one stream endpoint while running.
    """

    def __init__(self, description: str, endpoint, factory: Factory, reactor) -> None:
        super().__init__(description, reactor)
        self.endpoint = endpoint
        self.factory = factory

    def _bind(self):
        return self.endpoint.listen(self.factory)


class DatagramListener(BaseListener):
    """
    Listens on one UDP address while running, with a protocol made for it.

    @ivar protocol: the protocol serving it.
    """

    def __init__(
        self,
        description: str,
        address: DatagramAddress,
        protocolFactory: Callable[[], DatagramProtocol],
        reactor,
        onListening: Callable[[int], None] = lambda port: None,
    ) -> None:
        """
        @param onListening: called with the bound port number, so that a
            UDP policy can refuse datagrams from our own ports.
        """
        super().__init__(description, reactor)
        self.address = address
        self.protocol = protocolFactory()
        self.onListening = onListening

    def _bind(self):
        if self.address.fd is not None:
            return adoptWithInfo(self.reactor, self.address.fd, self.protocol)
        return listenWithInfo(
            self.reactor, self.address.port, self.protocol, self.address.interface
        )

    def _boundPort(self, port) -> None:
        self.onListening(port.getHost().port)


def listeningAddresses(services: Sequence[service.IService]) -> list:
    """
    @return: the bound addresses of the listeners among C{services}, for
        code (tests, mostly) that listened on port 0.
    """
    return [s.port.getHost() for s in services if getattr(s, "port", None) is not None]
