# -*- test-case-name: tests.chat.test_tap -*-
"""
twistd glue for chat: options, the state directory, and the zero
configuration default (plaintext on 127.0.0.1:6667, TLS on port 6697 with
a self-signed certificate made on first run).
"""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path

import attrs
from twisted.application import service
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.cred import strcred
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage

from netservices._common.listen import (
    ConnectionCapOptions,
    ListenOptions,
    StreamListener,
    nonNegativeFloat,
    numberOption,
    positiveFloat,
    positiveInt,
    splitDescription,
)
from netservices._common.logs import RefusalLog
from netservices._common.ratelimit import TokenBucket
from netservices._common.metrics import metricsOf, watchRefusals
from netservices._common.service import CallOnStop, addStreamListeners
from netservices._common.tls import ReloadableServerOptions, ensureSelfSignedCertificate
from netservices.chat.accounts import (
    AccountChecker,
    CertificateChecker,
    ChatRealm,
    CheckerService,
    GivenChecker,
)
from netservices.chat.directory import StoreDirectory
from netservices.chat.login import AccountSettings, RegistrationRefused
from netservices.chat.protocol import ChatFactory, ConnectionSettings, ServerInfo
from netservices.chat.service import ChatLimits, ChatService
from netservices.chat.store import (
    DATABASE_NAME,
    Account,
    AccountExists,
    Store,
    StoreError,
    StoreService,
    ThreadedStore,
)
from netservices.chat.wire import checkServerName, encode, validNick

CHAT_PORT = 6667
CHAT_TLS_PORT = 6697

_SETTINGS = ConnectionSettings()


def defaultDataDirectory() -> Path:
    """
    @return: where chat keeps its state unless told otherwise:
        C{/var/lib/netservices/chat} for root, else
        C{$XDG_STATE_HOME/netservices/chat} (C{~/.local/state/...}).
    """
    if os.geteuid() == 0:
        return Path("/var/lib/netservices/chat")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "netservices" / "chat"


_historySize = numberOption(int, lambda n: 0 <= n <= 1000, "an integer from 0 to 1000")
_seconds = numberOption(int, lambda n: n >= 0, "a whole number of seconds, at least 0")


def _clusterAddress(url: str):
    from netservices.chat.redislog import parseRedisURL

    try:
        return parseRedisURL(url)
    except ValueError as e:
        raise usage.UsageError(f"--cluster: {e}")


_clusterAddress.coerceDoc = "A redis:// URL."


class ChatOptions(ListenOptions, ConnectionCapOptions, strcred.AuthOptionMixin):
    """
    Options of C{twistd netservices chat}.
    """

    synopsis = "[options]"
    longdesc = (
        "An IRC server for IRC clients (irssi, WeeChat, HexChat...). With no"
        " --listen or --port it listens for plaintext on 127.0.0.1:6667 and"
        " for TLS on port 6697 of every address, with a self-signed"
        " certificate created in the state directory on first run (its"
        " SHA-256 fingerprint is logged, for clients to pin)."
    )
    defaultListen = f"tcp:{CHAT_PORT}:interface=127.0.0.1"
    portTemplate = "tcp:{port}:interface=127.0.0.1"
    # Each reactor turn's lines for a client go out in one send (see
    # ChatFactory.flush); an eager transport sends it at once.
    eagerWrites = True
    # TLS clients may present a certificate (any, even self-signed): its
    # fingerprint is what SASL EXTERNAL logs in with.
    requestClientCertificate = True

    optParameters = [
        [
            "data-dir",
            None,
            None,
            "State directory: the TLS certificate, the accounts database"
            " (chat.sqlite3), motd.txt. Default:"
            " /var/lib/netservices/chat for root, else"
            " $XDG_STATE_HOME/netservices/chat (~/.local/state/...).",
        ],
        ["server-name", None, None, "The server's name in replies (default: the host name).", checkServerName],
        ["network", None, "netservices", "The network name shown to clients.", checkServerName],
        [
            "motd-file",
            None,
            None,
            "A text file with the message of the day (default: motd.txt in the"
            " state directory if it exists).",
        ],
        [
            "registration-timeout",
            None,
            _SETTINGS.registrationTimeout,
            "Seconds a client has to register (NICK and USER) after connecting.",
            positiveFloat,
        ],
        [
            "ping-interval",
            None,
            _SETTINGS.pingInterval,
            "Seconds of silence from a client before the server sends PING.",
            positiveFloat,
        ],
        [
            "pong-timeout",
            None,
            _SETTINGS.pongTimeout,
            "Seconds to wait for an answer to that PING before disconnecting.",
            positiveFloat,
        ],
        [
            "recvq",
            None,
            _SETTINGS.recvq,
            "Bytes of a client's lines that may wait for flood control before"
            " it is disconnected (Excess Flood).",
            positiveInt,
        ],
        [
            "sendq",
            None,
            _SETTINGS.sendq,
            "Bytes that may wait for a client that does not read (beyond the"
            " transport's own 64 KiB) before it is disconnected (SendQ exceeded).",
            positiveInt,
        ],
        [
            "flood-burst",
            None,
            _SETTINGS.floodBurst,
            "Lines from one client handled at once before flood control slows it.",
            positiveInt,
        ],
        [
            "flood-rate",
            None,
            _SETTINGS.floodRate,
            "Lines per second from one client after the burst (0: no flood control).",
            nonNegativeFloat,
        ],
        [
            "max-channels",
            None,
            ChatLimits().maxChannels,
            "Channels one user may be in.",
            positiveInt,
        ],
        [
            "history",
            None,
            ChatLimits().history,
            "Messages (PRIVMSG and NOTICE) each channel keeps for replay on join"
            " and CHATHISTORY, at most 1000; kept across restarts for registered"
            " channels (0: no history).",
            _historySize,
        ],
        [
            "tls-handshake-timeout",
            None,
            _SETTINGS.tlsHandshakeTimeout,
            "Seconds a TLS client has to finish its handshake.",
            positiveFloat,
        ],
        [
            "nick-grace",
            None,
            AccountSettings().nickGrace,
            "Seconds a user whose nick belongs to an account has to log in to"
            " it before being renamed to a guest nick.",
            nonNegativeFloat,
        ],
        [
            "sts-duration",
            None,
            None,
            "Seconds of the STS policy (IRCv3 strict transport security) offered"
            " when a TLS listener exists: clients that honour it then use TLS only."
            " Default 300, but not offered for the self-signed zero-configuration"
            " certificate (those clients would refuse it) unless given; 0: off.",
            _seconds,
        ],
        [
            "cluster",
            None,
            None,
            "Run as one node of a cluster that acts as one server, through the"
            " Redis (7.0 or later) at redis://HOST:PORT/DB, which also keeps the"
            " accounts and registered channels (run it with persistence:"
            " appendonly yes). Every node needs its own --node-name",
            _clusterAddress,
        ],
        [
            "node-name",
            None,
            None,
            "This node's name in the cluster (letters, digits, '-', '.', '_';"
            " unique among the nodes). Needed with --cluster.",
        ],
    ]

    supportedInterfaces = (IUsernamePassword,)

    optFlags = [
        [
            "require-auth",
            None,
            "Refuse users who do not log in (SASL or PASS) before registering.",
        ],
        [
            "allow-registration",
            None,
            "Let users create accounts themselves over TLS (REGISTER, IRCv3"
            " draft/account-registration; at most 5 at once, then 10 an hour).",
        ],
    ]

    def postOptions(self) -> None:
        self.zeroConfiguration = not self["listen"]
        super().postOptions()
        self["tls-port"] = CHAT_TLS_PORT if self.zeroConfiguration else tlsPort(self["listen"])
        if self["data-dir"] is None:
            self["data-dir"] = str(defaultDataDirectory())
        if self["motd-file"] is not None:
            try:
                self["motd"] = readMotd(Path(self["motd-file"]))
            except OSError as e:
                raise usage.UsageError(f"--motd-file: {e.strerror}: {self['motd-file']}")
        else:
            self["motd"] = None
        if self["node-name"] is not None and self["cluster"] is None:
            raise usage.UsageError("--node-name needs --cluster")
        if self["cluster"] is not None:
            name = self["node-name"]
            if name is None:
                raise usage.UsageError("--cluster needs --node-name (unique per node)")
            if not (0 < len(name) <= 32 and name.isascii() and all(
                c.isalnum() or c in "-._" for c in name
            )):
                raise usage.UsageError(
                    f"--node-name: 1 to 32 letters, digits, '-', '.' or '_', not {name!r}"
                )

    def connectionSettings(self) -> ConnectionSettings:
        """
        @return: the per-connection limits chosen on the command line.
        """
        return ConnectionSettings(
            registrationTimeout=self["registration-timeout"],
            pingInterval=self["ping-interval"],
            pongTimeout=self["pong-timeout"],
            recvq=self["recvq"],
            sendq=self["sendq"],
            floodBurst=self["flood-burst"],
            floodRate=self["flood-rate"],
            tlsHandshakeTimeout=self["tls-handshake-timeout"],
        )

    def stsSettings(self) -> tuple[int | None, int]:
        """
        @return: the TLS port to advertise in STS (L{None}: no STS) and the
            policy's duration.
        """
        duration = self["sts-duration"]
        if self["tls-port"] is None or duration == 0:
            return None, 0
        if duration is None:
            if self.zeroConfiguration:
                return None, 0
            duration = 300
        return self["tls-port"], duration


def tlsPort(descriptions: list[str]) -> int | None:
    """
    @return: the port of the first TLS listener among C{descriptions}
        (C{ssl:}, C{tls:}, C{haproxy-ssl:}, C{haproxy:ssl:}...), or L{None}
        (also for port 0, which is not known yet).
    """
    for description in descriptions:
        kind, *fields = splitDescription(description)
        while kind == "haproxy" and fields:
            kind, *fields = fields
        if kind not in ("ssl", "tls", "haproxy-ssl"):
            continue
        named = dict(field.split("=", 1) for field in fields if "=" in field)
        positional = [field for field in fields if "=" not in field]
        if kind == "tls":
            positional = positional[1:]  # the directory comes first
        port = named.get("port") or (positional[0] if positional else "")
        if port.isdigit() and int(port) > 0:
            return int(port)
    return None


def readMotd(path: Path) -> tuple[str, ...]:
    """
    @return: the lines of a message-of-the-day file (at most 100, invalid
        UTF-8 replaced).
    """
    text = path.read_bytes().decode("utf-8", "replace")
    lines = [line.rstrip().replace("\0", "") for line in text.splitlines()[:100]]
    return tuple(line or " " for line in lines)


def _dataDirMotd(dataDir: Path, log: Logger) -> tuple[str, ...] | None:
    path = dataDir / "motd.txt"
    if not path.is_file():
        return None
    try:
        return readMotd(path)
    except OSError as e:
        log.warn("cannot read {path}: {error}", path=str(path), error=e.strerror)
        return None


def _refusalMessage(reason: str) -> bytes:
    text = {
        "max-per-peer": "Too many connections from your address",
        "max-connections": "Server is full",
    }.get(reason, "Connection refused")
    return encode(None, "ERROR", f"Closing Link: ({text})")


def watchChat(metrics, chat: ChatService, factory: ChatFactory) -> None:
    """
    Add the chat metrics: users, channels, messages relayed and their
    deliveries, bytes and lines in and out, input refused by reason.
    """
    metrics.gauge("chat_users", "Registered users connected now.", lambda: chat.registeredCount)
    metrics.gauge(
        "chat_unregistered", "Connections not registered yet.", lambda: chat.unregisteredCount
    )
    metrics.gauge("chat_channels", "Channels that exist now.", lambda: len(chat.channels))
    metrics.counter(
        "chat_messages", "PRIVMSG and NOTICE messages relayed.", lambda: chat.counts["messages"]
    )
    metrics.counter(
        "chat_deliveries",
        "Lines relayed to users (one message to a channel of N is N-1).",
        lambda: chat.counts["deliveries"],
    )
    metrics.counter("bytes_received", "Bytes received.", lambda: factory.counts["bytesReceived"])
    metrics.counter("bytes_sent", "Bytes sent.", lambda: factory.counts["bytesSent"])
    metrics.counter(
        "chat_lines_received", "Lines received from clients.", lambda: factory.counts["linesReceived"]
    )
    watchRefusals(
        metrics, "chat_input_refused",
        "Input refused or clients dropped, by reason (line-too-long, nul, bare-cr,"
        " excess-flood, sendq-exceeded, ping-timeout, registration-timeout).",
        factory.refusals,
    )


class Registrar:
    """
    Creates accounts for C{REGISTER} (when C{--allow-registration}): the
    name must be a valid nick, the password at least 8 characters; it is
    hashed on the checker's pool and stored off the reactor thread; at most
    5 registrations at once, then 10 an hour, server-wide.
    """

    def __init__(self, store, checker: AccountChecker, directory: StoreDirectory, clock) -> None:
        self.store = store
        self.checker = checker
        self.directory = directory
        self.clock = clock
        self.bucket = TokenBucket(10 / 3600, 5, clock.seconds())

    def register(self, name: str, password: str) -> Deferred:
        """
        @return: a L{Deferred} firing with the account name, or failing
            with L{RegistrationRefused}.
        """
        if not validNick(name):
            return fail(RegistrationRefused("BAD_ACCOUNT_NAME", "Not a valid account name"))
        if len(password) < 8:
            return fail(RegistrationRefused("WEAK_PASSWORD", "Use at least 8 characters"))
        if not self.bucket.take(self.clock.seconds()):
            return fail(
                RegistrationRefused("TEMPORARILY_UNAVAILABLE", "Too many registrations; try later")
            )
        hashing = deferToThreadPool(
            self.clock, self.checker.pool, self.checker.hasher.hash, password
        )
        hashing.addCallback(
            lambda passwordHash: self.store.addAccount(
                Account(name, passwordHash, created=self.clock.seconds())
            )
        )

        def added(_) -> str:
            self.directory.refresh()
            return name

        def exists(failure):
            failure.trap(AccountExists)
            raise RegistrationRefused("ACCOUNT_EXISTS", "That account exists already")

        return hashing.addCallbacks(added, exists)


def _accounts(options: ChatOptions, dataDir: Path, reactor, top: service.MultiService):
    """
    Open the account store (with C{--cluster}, in the cluster's Redis;
    else C{chat.sqlite3} in C{dataDir}) and build the login portal, as
    services of C{top} (the store first, so that it stops last).

    @return: the store, the password checker, the portal and the settings
        (C{chat-admin setting}).
    @raise SystemExit: with one line, when the database cannot be used.
    """
    address = options["cluster"]
    if address is not None:
        # The cluster's Redis, which every node reaches.  Not contacted
        # here: like the cluster's log, the store waits for Redis if it is
        # away, and the settings are read as the directory starts.
        from netservices.chat.redisstore import RedisStore

        Logger(namespace="netservices.chat").info("chat accounts in {redis}", redis=str(address))
        store = ThreadedStore(str(address), reactor, opener=lambda: RedisStore.connect(address))
        settings: dict[str, str] = {}
    else:
        path = dataDir / DATABASE_NAME
        try:
            # Once here, synchronously, so that a bad database is a one-line
            # error at startup rather than a failure on the store's thread.
            opened = Store.open(path)
            settings = opened.listSettings()
            opened.close()
        except (StoreError, OSError) as e:
            raise SystemExit(f"netservices chat: {e}")
        store = ThreadedStore(path, reactor)
    StoreService(store).setServiceParent(top)
    checker = AccountChecker(store, reactor)
    CheckerService(checker).setServiceParent(top)
    given = options.get("credCheckers") or []
    if given:
        # --auth: passwords are checked by what the user gave; accounts in
        # the store still give operator rights.
        realm = ChatRealm(store, requireAccount=False)
        checkers = [*map(GivenChecker, given), CertificateChecker(store)]
    else:
        realm = ChatRealm(store)
        checkers = [checker, CertificateChecker(store)]
    return store, checker, Portal(realm, checkers), settings


def makeService(options: ChatOptions, reactor=None) -> service.MultiService:
    """
    @return: the chat service.
    @raise SystemExit: with one line, when the state directory or its
        certificate cannot be used.
    """
    reactor = reactor or options.getReactor()
    log = Logger(namespace="netservices.chat")
    dataDir = Path(options["data-dir"])
    try:
        dataDir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"netservices chat: cannot use state directory {dataDir}: {e.strerror}")
    log.info("chat state in {dataDir}", dataDir=str(dataDir))
    motd = options["motd"]
    if motd is None:
        motd = _dataDirMotd(dataDir, log)
    name = options["server-name"] or socket.gethostname() or "localhost"
    try:
        name = checkServerName(name)
    except ValueError:
        name = "localhost"
    started = datetime.datetime.now(datetime.timezone.utc)
    info = ServerInfo(
        name=name,
        network=options["network"],
        created=started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        motd=motd,
    )
    top = service.MultiService()
    store, checker, portal, settings = _accounts(options, dataDir, reactor, top)
    directory = StoreDirectory(store, reactor)
    directory.settings = settings
    directory.setServiceParent(top)
    chat = ChatService(
        name, reactor,
        ChatLimits(maxChannels=options["max-channels"], history=min(options["history"], 1000)),
        directory,
    )
    refusals = RefusalLog(log, reactor, "input")
    stsPort, stsDuration = options.stsSettings()
    register = None
    if options["allow-registration"]:
        register = Registrar(store, checker, directory, reactor).register
    accounts = AccountSettings(
        portal=portal,
        requireAuth=bool(options["require-auth"]),
        nickGrace=options["nick-grace"],
        stsPort=stsPort,
        stsDuration=stsDuration,
        rehash=lambda: top.reload(),
        register=register,
    )
    if options["cluster"] is None:
        factory = ChatFactory(
            chat, info, reactor, options.connectionSettings(), log, refusals, accounts
        )
    else:
        from netservices.chat.cluster import ClusterFactory
        from netservices.chat.redislog import RedisLog

        factory = ClusterFactory(
            chat, info, reactor, options.connectionSettings(), log, refusals, accounts,
            nodeName=options["node-name"],
        )
        log.info(
            "chat cluster node {node} through {redis}",
            node=options["node-name"], redis=str(options["cluster"]),
        )
        clusterLog = RedisLog(factory.replica, options["cluster"], reactor)
        clusterLog.setServiceParent(top)
        metrics = metricsOf(options)
        metrics.counter(
            "chat_cluster_entries", "Cluster log entries this node appended and applied.",
            lambda: {"appended": clusterLog.counts["appended"], "applied": clusterLog.counts["applied"]},
            ("direction",),
        )
        metrics.counter(
            "chat_cluster_outages", "Times this node lost its connections to Redis.",
            lambda: clusterLog.counts["outages"],
        )
        metrics.gauge(
            "chat_cluster_nodes", "Live nodes of the cluster, as this node sees them.",
            lambda: len(factory.replica.nodes),
        )
    connectionRefusals = RefusalLog(log, reactor, "connection")
    limited = addStreamListeners(
        top, options["listen"], options["endpoints"], factory, options, reactor,
        connectionRefusals, _refusalMessage,
    )
    tlsOptions = None
    if options.zeroConfiguration:
        try:
            certificate, created = ensureSelfSignedCertificate(dataDir)
        except (OSError, ValueError) as e:
            raise SystemExit(f"netservices chat: {getattr(e, 'strerror', None) or e}")
        log.info(
            "TLS certificate {path} ({state}), SHA-256 fingerprint {fingerprint}",
            path=str(certificate.certificatePath),
            state="created" if created else "existing",
            fingerprint=certificate.fingerprint,
        )
        tlsOptions = ReloadableServerOptions(certificate, requestClientCertificate=True)
        endpoint = SSL4ServerEndpoint(reactor, CHAT_TLS_PORT, tlsOptions)
        StreamListener(
            f"ssl:{CHAT_TLS_PORT} with {certificate.certificatePath}", endpoint, limited, reactor
        ).setServiceParent(top)

    watchChat(metricsOf(options), chat, factory)
    metricsOf(options).counter(
        "chat_logins", "Password logins by outcome.",
        lambda: {
            outcome: checker.counts.get(outcome, 0)
            for outcome in ("succeeded", "failed", "throttled")
        },
        ("outcome",),
    )

    def logTotals() -> None:
        log.info(
            "chat totals: users={users} channels={channels} messages={messages}"
            " deliveries={deliveries}",
            users=chat.registeredCount,
            channels=len(chat.channels),
            **chat.counts,
        )
        refusals.logTotals()
        connectionRefusals.logTotals()

    CallOnStop(logTotals).setServiceParent(top)

    def applySettings(settings: dict[str, str]) -> None:
        # chat-admin setting: read at start, every refresh and on reload.
        info = factory.info
        network = settings.get("network", options["network"])
        motd = info.motd
        if options["motd-file"] is None:
            if "motd" in settings:
                motd = tuple(line or " " for line in settings["motd"].split("\n")[:100])
            else:
                motd = _dataDirMotd(dataDir, log)
        if (network, motd) != (info.network, info.motd):
            factory.info = attrs.evolve(info, network=network, motd=motd)
            log.info("applied the settings: {keys}", keys=", ".join(sorted(settings)) or "none")

    applySettings(settings)
    directory.settingsChanged = applySettings

    def reload() -> None:
        # SIGHUP or REHASH: accounts, registered channels, the default TLS
        # certificate and the message of the day are read again; nobody is
        # dropped.
        if directory.running:
            directory.refresh()
        if tlsOptions is not None:
            try:
                changed = tlsOptions.reload()
            except ValueError as e:
                log.warn("reload: {error}; TLS certificate unchanged", error=str(e))
            else:
                if changed:
                    log.info(
                        "reloaded the TLS certificate, SHA-256 fingerprint {fingerprint}",
                        fingerprint=tlsOptions.certificate.fingerprint,
                    )
        if options["motd-file"] is not None:
            try:
                motd = readMotd(Path(options["motd-file"]))
            except OSError as e:
                log.warn(
                    "reload: cannot read {path}: {error}; MOTD unchanged",
                    path=options["motd-file"], error=e.strerror,
                )
                return
        elif "motd" in directory.settings:
            return
        else:
            motd = _dataDirMotd(dataDir, log)
        factory.info = attrs.evolve(factory.info, motd=motd)
        log.info(
            "reloaded the MOTD: {lines} lines", lines=0 if motd is None else len(motd)
        )

    top.reload = reload
    top.chat = chat
    top.factory = factory
    return top
