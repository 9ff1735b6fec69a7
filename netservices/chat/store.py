# -*- test-case-name: tests.chat.test_store -*-
"""
The chat server's persistent state: accounts, registered channels and
settings, in one SQLite file in the state directory (C{chat.sqlite3}).

Durability: the database is in WAL mode with C{synchronous=FULL}, and
every write is one transaction (C{BEGIN IMMEDIATE} ... C{COMMIT}) that has
committed before the method returns.  A process killed at any moment
(C{kill -9}) leaves a database that opens, passes C{PRAGMA
integrity_check} and holds every committed change: in WAL mode a commit
is a write to the WAL file, which the kernel keeps once C{write()} has
returned, and recovery on the next open replays or ignores whole
transactions only.  C{synchronous=NORMAL} would already be enough for a
killed process; C{FULL} also makes each commit survive a power cut or a
kernel crash (an C{fsync} of the WAL per commit), which costs little at
the rate accounts and channels change.

L{Store} is synchronous and owns one connection, usable only from the
thread that opened it (SQLite checks).  The C{netservices chat-admin}
command uses it directly; the server uses L{ThreadedStore}, which runs
every call on one dedicated thread and answers with L{Deferred}s, so that
the reactor thread never waits for the disk.  Both may use the file at
the same time: SQLite serialises writers, and a writer waits up to
L{BUSY_TIMEOUT} seconds for the other.

Names: account names follow the nick rules (L{validNick}) and channel
names L{validChannel}; both are compared under the C{ascii} case mapping
(L{foldCase}) and kept as they were first typed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import attrs
from twisted.application import service
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from netservices.chat.wire import foldCase, validChannel, validNick
from netservices.threaded.pool import DaemonThreadPool

#: The file in the state directory.
DATABASE_NAME = "chat.sqlite3"

#: The schema this code reads and writes (C{PRAGMA user_version}): 1
#: accounts, channels and settings; 2 adds channel history.
SCHEMA_VERSION = 2

#: Seconds a writer waits for another process's transaction to end.
BUSY_TIMEOUT = 5.0

#: Channel modes a registered channel keeps.
CHANNEL_MODES = "imnst"

#: Longest ban list or operator list a record may hold.
MAX_LIST = 1000

#: Most history entries kept per registered channel (the oldest go first).
MAX_HISTORY = 1000

_SCHEMA = [
    """
    CREATE TABLE accounts (
        folded TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        oper INTEGER NOT NULL DEFAULT 0,
        fingerprint TEXT UNIQUE,
        created REAL NOT NULL
    )
    """,
    """
    CREATE TABLE channels (
        folded TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        founder TEXT NOT NULL REFERENCES accounts (folded),
        modes TEXT NOT NULL,
        key TEXT,
        "limit" INTEGER,
        topic TEXT NOT NULL,
        topic_setter TEXT NOT NULL,
        topic_time INTEGER NOT NULL,
        bans TEXT NOT NULL,
        operators TEXT NOT NULL
    )
    """,
    "CREATE INDEX channels_founder ON channels (founder)",
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
]

#: Version 2: the recent messages of registered channels.
_SCHEMA_2 = [
    """
    CREATE TABLE history (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL REFERENCES channels (folded) ON DELETE CASCADE,
        time REAL NOT NULL,
        msgid TEXT NOT NULL,
        line BLOB NOT NULL,
        account TEXT,
        tags TEXT NOT NULL
    )
    """,
    "CREATE INDEX history_channel ON history (channel, id)",
]

#: The statements that bring a file from version N-1 to version N.
_MIGRATIONS = {1: _SCHEMA, 2: _SCHEMA_2}


@attrs.frozen
class Account:
    """
    A registered account.

    @ivar name: the name as registered (compared case-insensitively).
    @ivar passwordHash: the password's PHC string (C{$argon2id$...}); never
        the password.
    @ivar oper: whether the account may become an IRC operator.
    @ivar certificateFingerprint: the SHA-256 fingerprint of a TLS client
        certificate that logs in to this account (SASL EXTERNAL), as 64
        lower-case hex digits, or L{None}.
    @ivar created: when the account was made (POSIX time).
    """

    name: str
    passwordHash: str = attrs.field(repr=False)
    oper: bool = False
    certificateFingerprint: str | None = None
    created: float = 0.0


@attrs.frozen
class ChannelRecord:
    """
    What a registered channel keeps across restarts.

    @ivar name: the name as registered, e.g. C{"#Lobby"}.
    @ivar founder: the founder's account name.
    @ivar modes: flag modes, letters from C{"imnst"}.
    @ivar key: the channel key (C{+k}), or L{None}.
    @ivar limit: the member limit (C{+l}), or L{None}.
    @ivar topic: the topic, C{""} for none.
    @ivar topicSetter: who set it (C{nick!user@host}).
    @ivar topicTime: when (POSIX time).
    @ivar bans: ban masks.
    @ivar operators: account names that get C{@} when they join.
    """

    name: str
    founder: str
    modes: str = "nt"
    key: str | None = None
    limit: int | None = None
    topic: str = ""
    topicSetter: str = ""
    topicTime: int = 0
    bans: tuple[str, ...] = ()
    operators: tuple[str, ...] = ()


def channelRecordFromFields(fields: dict) -> ChannelRecord:
    """
    @return: a registered channel's record from its fields as JSON gives
        them back (C{attrs.asdict} of a record, with lists for tuples).
    """
    return ChannelRecord(
        **{**fields, "bans": tuple(fields["bans"]), "operators": tuple(fields["operators"])}
    )


@attrs.frozen
class HistoryEntry:
    """
    One message of a registered channel's history.

    @ivar time: when it was sent (POSIX time).
    @ivar msgid: its message id.
    @ivar line: the message as relayed, without tags, CR LF included.
    @ivar account: the sender's account, or L{None}.
    @ivar tags: the sender's client-only tags.
    """

    time: float
    msgid: str
    line: bytes
    account: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


class StoreError(Exception):
    """
    A store operation was refused; the message says why, in one line.
    """


class AccountExists(StoreError):
    """
    An account of that name (in any case) exists already.
    """


class NoSuchAccount(StoreError):
    """
    There is no account of that name.
    """


class AccountOwnsChannels(StoreError):
    """
    The account founded registered channels, which must go first.

    @ivar channels: their names.
    """

    def __init__(self, account: str, channels: list[str]) -> None:
        super().__init__(f"account {account} founded {', '.join(channels)}")
        self.channels = channels


class ChannelExists(StoreError):
    """
    A channel of that name (in any case) is registered already.
    """


class NoSuchChannel(StoreError):
    """
    No channel of that name is registered.
    """


class FingerprintInUse(StoreError):
    """
    Another account has registered that certificate fingerprint.
    """


def normalizeFingerprint(text: str) -> str:
    """
    @param text: a SHA-256 fingerprint as hex digits, in any case, with or
        without colons (C{85:58:E1:...} as the server logs its own).
    @return: the 64 lower-case hex digits.
    @raise ValueError: if C{text} is not one.
    """
    digits = text.replace(":", "").strip().lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(
            f"{text[:100]!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
        )
    return digits


def _checkName(name: object, valid, what: str) -> str:
    if not isinstance(name, str) or not valid(name):
        raise ValueError(f"{str(name)[:60]!r} is not a valid {what}")
    return name


def checkAccountName(name: object) -> str:
    """
    @return: C{name}, if it can be an account's.
    @raise ValueError: with one line, if not.
    """
    return _checkName(
        name,
        validNick,
        "account name (nick rules: letters, digits and _[]\\^{}|`-, not starting"
        " with a digit or -, at most 30)",
    )


def checkChannelName(name: object) -> str:
    """
    @return: C{name}, if it can be a channel's.
    @raise ValueError: with one line, if not.
    """
    return _checkName(
        name,
        validChannel,
        "channel name (# then up to 49 characters, no spaces, commas or control"
        " characters)",
    )


def _checkText(what: str, value: object) -> str:
    if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
        raise ValueError(f"{what} must be text without CR, LF or NUL")
    return value


def _checkPasswordHash(passwordHash: object) -> str:
    # Refuse anything that is not a PHC string, so that a password can
    # never be stored in its place by mistake.
    if not isinstance(passwordHash, str) or not passwordHash.startswith("$argon2"):
        raise ValueError("a password hash must be an Argon2 PHC string ($argon2id$...)")
    return passwordHash


def _checkAccount(account: Account) -> Account:
    """
    @return: C{account} as stored: its fingerprint normalized, C{oper} a
        L{bool} and C{created} a L{float}.
    @raise ValueError: with one line, if it cannot be stored.
    """
    fingerprint = account.certificateFingerprint
    return Account(
        checkAccountName(account.name),
        _checkPasswordHash(account.passwordHash),
        bool(account.oper),
        None if fingerprint is None else normalizeFingerprint(fingerprint),
        float(account.created),
    )


def _checkSetting(key: object, value: object) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError("a setting's key is non-empty text")
    if not isinstance(value, str):
        raise ValueError("a setting's value is text")


def _checkRecord(record: ChannelRecord) -> None:
    checkChannelName(record.name)
    checkAccountName(record.founder)
    modes = record.modes
    if (
        not isinstance(modes, str)
        or any(m not in CHANNEL_MODES for m in modes)
        or len(set(modes)) != len(modes)
    ):
        raise ValueError(f"channel modes {modes!r}: each of {CHANNEL_MODES!r} at most once")
    key = record.key
    if key is not None and (
        not isinstance(key, str)
        or not 0 < len(key) <= 23
        or any(ord(c) <= 0x20 or ord(c) == 0x7F or c == "," for c in key)
    ):
        raise ValueError("a channel key is 1 to 23 characters, no spaces, commas or controls")
    limit = record.limit
    if limit is not None and (type(limit) is not int or limit < 1):
        raise ValueError(f"channel limit {limit!r}: a positive integer or none")
    _checkText("the topic", record.topic)
    _checkText("the topic setter", record.topicSetter)
    if type(record.topicTime) is not int or record.topicTime < 0:
        raise ValueError("the topic time is a non-negative integer")
    for what, entries in (("bans", record.bans), ("operators", record.operators)):
        if not isinstance(entries, tuple) or len(entries) > MAX_LIST:
            raise ValueError(f"{what}: a tuple of at most {MAX_LIST} entries")
    for mask in record.bans:
        if not _checkText("a ban mask", mask) or " " in mask:
            raise ValueError("a ban mask is non-empty text without spaces")
    for operator in record.operators:
        checkAccountName(operator)


class Store:
    """
    The chat state in one SQLite connection (see the module docstring).

    Every method that writes runs one transaction, committed before it
    returns.  Methods raise L{ValueError} for names or values that can
    never be stored, and a L{StoreError} for refusals that depend on what
    is stored (L{AccountExists}, L{NoSuchAccount}, ...).

    @ivar path: the database file.
    @ivar thread: the identity of the thread that opened it, the only one
        that may use it.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self.thread = threading.get_ident()

    @classmethod
    def open(cls, path: str | os.PathLike) -> Store:
        """
        Open the database at C{path}, creating the file (mode 0600) and the
        schema if needed.  Its directory must exist.

        @raise StoreError: with one line, if it cannot be opened or was
            written by a newer version (a schema this code does not know).
        """
        path = Path(path)
        connection = None
        try:
            # Create it with mode 0600 before SQLite does (SQLite would
            # follow the umask); the WAL and shared-memory files SQLite
            # makes next to it take the same mode.
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if os.fstat(descriptor).st_mode & 0o077:
                    os.fchmod(descriptor, 0o600)
            finally:
                os.close(descriptor)
            connection = sqlite3.connect(
                str(path), timeout=BUSY_TIMEOUT, isolation_level=None
            )
            (mode,) = connection.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode != "wal":
                raise StoreError(f"cannot use {path}: WAL mode refused ({mode})")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA foreign_keys=ON")
            store = cls(connection, path)
            store._migrate()
        except StoreError:
            if connection is not None:
                connection.close()
            raise
        except sqlite3.Error as e:
            if connection is not None:
                connection.close()
            raise StoreError(f"cannot use {path}: {e}")
        except OSError as e:
            raise StoreError(f"cannot open {path}: {e.strerror}")
        return store

    def close(self) -> None:
        """
        Close the connection.
        """
        self._db.close()

    def _migrate(self) -> None:
        with self._write() as db:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this"
                    f" version of netservices knows ({SCHEMA_VERSION})"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    db.execute(statement)
            if version < SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """
        One write transaction: it takes the write lock at once (so that
        what it reads cannot change before it writes), commits when the
        block ends and rolls back if it raises.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def schemaVersion(self) -> int:
        """
        @return: the schema version of the file.
        """
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    # Accounts

    _ACCOUNT_COLUMNS = "name, password_hash, oper, fingerprint, created"

    @staticmethod
    def _account(row) -> Account:
        name, passwordHash, oper, fingerprint, created = row
        return Account(name, passwordHash, bool(oper), fingerprint, created)

    def _existingAccount(self, db, name: str) -> str:
        folded = foldCase(checkAccountName(name))
        if db.execute("SELECT 1 FROM accounts WHERE folded = ?", (folded,)).fetchone() is None:
            raise NoSuchAccount(f"no account {name}")
        return folded

    def addAccount(self, account: Account) -> None:
        """
        Register C{account}.

        @raise AccountExists: if its name is taken (in any case).
        @raise FingerprintInUse: if another account has its fingerprint.
        """
        account = _checkAccount(account)
        with self._write() as db:
            folded = foldCase(account.name)
            if db.execute("SELECT 1 FROM accounts WHERE folded = ?", (folded,)).fetchone():
                raise AccountExists(f"account {account.name} exists already")
            self._checkFingerprintFree(db, account.certificateFingerprint, folded)
            db.execute(
                "INSERT INTO accounts (folded, name, password_hash, oper, fingerprint,"
                " created) VALUES (?, ?, ?, ?, ?, ?)",
                (folded, account.name, account.passwordHash, int(account.oper),
                 account.certificateFingerprint, account.created),
            )

    def getAccount(self, name: str) -> Account | None:
        """
        @return: the account called C{name} (in any case), or L{None}; also
            L{None} for a name that no account can have.
        """
        if not isinstance(name, str) or not validNick(name):
            return None
        row = self._db.execute(
            f"SELECT {self._ACCOUNT_COLUMNS} FROM accounts WHERE folded = ?",
            (foldCase(name),),
        ).fetchone()
        return None if row is None else self._account(row)

    def setPassword(self, name: str, passwordHash: str) -> None:
        """
        Replace the password hash of account C{name}.

        @raise NoSuchAccount: if there is none.
        """
        _checkPasswordHash(passwordHash)
        with self._write() as db:
            folded = self._existingAccount(db, name)
            db.execute(
                "UPDATE accounts SET password_hash = ? WHERE folded = ?", (passwordHash, folded)
            )

    def setOper(self, name: str, oper: bool) -> None:
        """
        Allow or forbid account C{name} to become an IRC operator.

        @raise NoSuchAccount: if there is none.
        """
        with self._write() as db:
            folded = self._existingAccount(db, name)
            db.execute("UPDATE accounts SET oper = ? WHERE folded = ?", (int(bool(oper)), folded))

    def _checkFingerprintFree(self, db, fingerprint: str | None, folded: str) -> None:
        if fingerprint is None:
            return
        row = db.execute(
            "SELECT name FROM accounts WHERE fingerprint = ? AND folded != ?",
            (fingerprint, folded),
        ).fetchone()
        if row is not None:
            raise FingerprintInUse(f"account {row[0]} has that certificate fingerprint already")

    def setCertificateFingerprint(self, name: str, fingerprint: str | None) -> None:
        """
        Register (or with L{None}, forget) the SHA-256 fingerprint of the
        client certificate that logs in to account C{name}.

        @raise NoSuchAccount: if there is none.
        @raise FingerprintInUse: if another account has that fingerprint.
        @raise ValueError: if C{fingerprint} is not a SHA-256 fingerprint.
        """
        if fingerprint is not None:
            fingerprint = normalizeFingerprint(fingerprint)
        with self._write() as db:
            folded = self._existingAccount(db, name)
            self._checkFingerprintFree(db, fingerprint, folded)
            db.execute(
                "UPDATE accounts SET fingerprint = ? WHERE folded = ?", (fingerprint, folded)
            )

    def accountForFingerprint(self, fingerprint: str) -> str | None:
        """
        @return: the name of the account that registered this certificate
            fingerprint (any form L{normalizeFingerprint} takes), or
            L{None}.
        """
        try:
            fingerprint = normalizeFingerprint(fingerprint)
        except ValueError:
            return None
        row = self._db.execute(
            "SELECT name FROM accounts WHERE fingerprint = ?", (fingerprint,)
        ).fetchone()
        return None if row is None else row[0]

    def deleteAccount(self, name: str, force: bool = False) -> None:
        """
        Delete account C{name}, and take it off every channel's operator
        list.

        @param force: also drop the channels it founded.
        @raise NoSuchAccount: if there is none.
        @raise AccountOwnsChannels: if it founded registered channels and
            C{force} is false.
        """
        with self._write() as db:
            folded = self._existingAccount(db, name)
            founded = [
                row[0]
                for row in db.execute(
                    "SELECT name FROM channels WHERE founder = ? ORDER BY folded", (folded,)
                )
            ]
            if founded and not force:
                raise AccountOwnsChannels(name, founded)
            db.execute("DELETE FROM channels WHERE founder = ?", (folded,))
            for channel, operators in db.execute(
                "SELECT folded, operators FROM channels"
            ).fetchall():
                names = json.loads(operators)
                kept = [n for n in names if foldCase(n) != folded]
                if kept != names:
                    db.execute(
                        "UPDATE channels SET operators = ? WHERE folded = ?",
                        (json.dumps(kept), channel),
                    )
            db.execute("DELETE FROM accounts WHERE folded = ?", (folded,))

    def listAccounts(self) -> list[Account]:
        """
        @return: every account, by name.
        """
        return [
            self._account(row)
            for row in self._db.execute(
                f"SELECT {self._ACCOUNT_COLUMNS} FROM accounts ORDER BY folded"
            )
        ]

    # Channels

    _CHANNEL_COLUMNS = (
        "channels.name, accounts.name, modes, key, \"limit\", topic, topic_setter,"
        " topic_time, bans, operators FROM channels JOIN accounts"
        " ON channels.founder = accounts.folded"
    )

    @staticmethod
    def _record(row) -> ChannelRecord:
        name, founder, modes, key, limit, topic, setter, when, bans, operators = row
        return ChannelRecord(
            name, founder, modes, key, limit, topic, setter, when,
            tuple(json.loads(bans)), tuple(json.loads(operators)),
        )

    @staticmethod
    def _values(record: ChannelRecord) -> tuple:
        return (
            record.modes, record.key, record.limit, record.topic, record.topicSetter,
            record.topicTime, json.dumps(list(record.bans)),
            json.dumps(list(record.operators)),
        )

    def registerChannel(self, record: ChannelRecord) -> None:
        """
        Register a channel.

        @raise ChannelExists: if it is registered already (in any case).
        @raise NoSuchAccount: if its founder has no account.
        """
        _checkRecord(record)
        with self._write() as db:
            folded = foldCase(record.name)
            if db.execute("SELECT 1 FROM channels WHERE folded = ?", (folded,)).fetchone():
                raise ChannelExists(f"channel {record.name} is registered already")
            founder = self._existingAccount(db, record.founder)
            db.execute(
                "INSERT INTO channels (folded, name, founder, modes, key, \"limit\", topic,"
                " topic_setter, topic_time, bans, operators)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (folded, record.name, founder, *self._values(record)),
            )

    def getChannel(self, name: str) -> ChannelRecord | None:
        """
        @return: the record of registered channel C{name} (in any case), or
            L{None}.
        """
        if not isinstance(name, str) or not validChannel(name):
            return None
        row = self._db.execute(
            f"SELECT {self._CHANNEL_COLUMNS} WHERE channels.folded = ?", (foldCase(name),)
        ).fetchone()
        return None if row is None else self._record(row)

    def saveChannel(self, record: ChannelRecord) -> None:
        """
        Store the modes, key, limit, topic, bans and operators of a
        registered channel (its name's case and its founder stay as
        registered).

        @raise NoSuchChannel: if it is not registered.
        """
        _checkRecord(record)
        with self._write() as db:
            updated = db.execute(
                "UPDATE channels SET modes = ?, key = ?, \"limit\" = ?, topic = ?,"
                " topic_setter = ?, topic_time = ?, bans = ?, operators = ?"
                " WHERE folded = ?",
                (*self._values(record), foldCase(record.name)),
            )
            if updated.rowcount == 0:
                raise NoSuchChannel(f"channel {record.name} is not registered")

    def dropChannel(self, name: str) -> None:
        """
        Forget registered channel C{name}.

        @raise NoSuchChannel: if it is not registered.
        """
        checkChannelName(name)
        with self._write() as db:
            db.execute("DELETE FROM history WHERE channel = ?", (foldCase(name),))
            deleted = db.execute("DELETE FROM channels WHERE folded = ?", (foldCase(name),))
            if deleted.rowcount == 0:
                raise NoSuchChannel(f"channel {name} is not registered")

    def listChannels(self) -> list[ChannelRecord]:
        """
        @return: every registered channel, by name.
        """
        return [
            self._record(row)
            for row in self._db.execute(f"SELECT {self._CHANNEL_COLUMNS} ORDER BY channels.folded")
        ]

    # History

    def appendHistory(self, entries: list[tuple[str, HistoryEntry]], keep: int = MAX_HISTORY) -> None:
        """
        Add C{(channel, entry)} pairs to the history of registered
        channels (entries of channels not registered are left out), and
        keep only the last C{keep} entries (at most L{MAX_HISTORY}) of each.
        """
        keep = max(0, min(keep, MAX_HISTORY))
        with self._write() as db:
            touched = set()
            for name, entry in entries:
                folded = foldCase(name)
                registered = db.execute(
                    "SELECT 1 FROM channels WHERE folded = ?", (folded,)
                ).fetchone()
                if registered is None:
                    continue
                touched.add(folded)
                db.execute(
                    "INSERT INTO history (channel, time, msgid, line, account, tags)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (folded, entry.time, entry.msgid, entry.line, entry.account,
                     json.dumps([list(pair) for pair in entry.tags])),
                )
            for folded in touched:
                db.execute(
                    "DELETE FROM history WHERE channel = ? AND id NOT IN"
                    " (SELECT id FROM history WHERE channel = ? ORDER BY id DESC LIMIT ?)",
                    (folded, folded, keep),
                )

    def getHistory(self, name: str, limit: int = MAX_HISTORY) -> list[HistoryEntry]:
        """
        @return: the last C{limit} entries of channel C{name}'s history,
            oldest first.
        """
        rows = self._db.execute(
            "SELECT time, msgid, line, account, tags FROM history WHERE channel = ?"
            " ORDER BY id DESC LIMIT ?",
            (foldCase(name), max(0, min(limit, MAX_HISTORY))),
        ).fetchall()
        return [
            HistoryEntry(time, msgid, bytes(line), account,
                         tuple((str(k), str(v)) for k, v in json.loads(tags)))
            for time, msgid, line, account, tags in reversed(rows)
        ]

    # Settings

    def getSetting(self, key: str) -> str | None:
        """
        @return: the value of setting C{key}, or L{None}.
        """
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def setSetting(self, key: str, value: str) -> None:
        """
        Set setting C{key} to C{value}.
        """
        _checkSetting(key, value)
        with self._write() as db:
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


    def deleteSetting(self, key: str) -> None:
        """
        Forget setting C{key} (nothing if it is not set).
        """
        with self._write() as db:
            db.execute("DELETE FROM settings WHERE key = ?", (key,))

    def listSettings(self) -> dict[str, str]:
        """
        @return: every setting.
        """
        return dict(self._db.execute("SELECT key, value FROM settings ORDER BY key"))


#: The methods of L{Store} that L{ThreadedStore} offers.
STORE_METHODS = (
    "deleteSetting",
    "listSettings",
    "addAccount",
    "getAccount",
    "setPassword",
    "deleteAccount",
    "listAccounts",
    "setOper",
    "setCertificateFingerprint",
    "accountForFingerprint",
    "registerChannel",
    "getChannel",
    "saveChannel",
    "dropChannel",
    "listChannels",
    "appendHistory",
    "getHistory",
    "getSetting",
    "setSetting",
)


class ThreadedStore:
    """
    A L{Store} (or a store with the same methods, such as
    L{netservices.chat.redisstore.RedisStore}) on its own thread: each
    method of L{Store} (see L{STORE_METHODS}) is here with the same
    arguments, returning a L{Deferred} of its result.  The calls run one at
    a time, in order, on the one thread of C{pool}, which opens and closes
    the connection; the reactor thread never touches SQLite (or Redis).

    @ivar path: the database file (L{None} with an C{opener}).
    @ivar description: what messages call the store: its file, or what
        was given with the C{opener} (e.g. a C{redis://} URL).
    """

    def __init__(
        self, path: str | os.PathLike, reactor, pool=None, opener: Callable[[], Store] | None = None
    ) -> None:
        """
        @param path: the database file; with C{opener}, what to call the
            store in messages.
        @param reactor: what C{deferToThreadPool} needs (C{callFromThread}).
        @param pool: a L{twisted.python.threadpool.ThreadPool} with exactly
            one thread (the default: a new one, of daemon threads); tests
            pass L{netservices.testing.SynchronousThreadPool}.
        @param opener: called with no arguments on the store's thread, it
            returns the open store (default: C{Store.open(path)}).
        """
        self.path = Path(path) if opener is None else None
        self.description = str(path)
        self._opener = opener if opener is not None else lambda: Store.open(self.path)
        self.reactor = reactor
        self.pool = pool if pool is not None else DaemonThreadPool(1, 1, name="chat-store")
        self._store: Store | None = None
        self.started = False

    def start(self) -> Deferred[None]:
        """
        Start the thread and open the database on it.

        @return: a L{Deferred} that fires once it is open, or fails with a
            L{StoreError} (every later call then fails with one too).
        """
        self.pool.start()
        self.started = True
        return self._call(self._open)

    def stop(self) -> Deferred[None]:
        """
        Close the database (after the calls queued before this one) and
        stop the thread.

        @return: a L{Deferred} that fires when both are done.
        """
        if not self.started:
            return fail(StoreError("the chat store was not started"))
        closing = self._call(self._close)
        self.started = False

        def stopPool(result):
            self.pool.stop()
            return result

        return closing.addBoth(stopPool)

    def _open(self) -> None:
        self._store = self._opener()

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _run(self, method: str, args: tuple, kwargs: dict):
        if self._store is None:
            raise StoreError(f"the chat store {self.description} is not open")
        return getattr(self._store, method)(*args, **kwargs)

    def _call(self, f, *args) -> Deferred:
        if not self.started:
            return fail(StoreError("the chat store is not started"))
        return deferToThreadPool(self.reactor, self.pool, f, *args)


def _threaded(method: str):
    def call(self: ThreadedStore, *args, **kwargs) -> Deferred:
        return self._call(self._run, method, args, kwargs)

    call.__name__ = method
    call.__doc__ = (
        f"L{{Store.{method}}} on the store's thread.\n\n"
        "        @return: a L{Deferred} of its result.\n        "
    )
    return call


for _method in STORE_METHODS:
    setattr(ThreadedStore, _method, _threaded(_method))
del _method


class StoreService(service.Service):
    """
    Starts a L{ThreadedStore} with the service and stops it (closing the
    database) when the service stops.
    """

    log = Logger(namespace="netservices.chat")

    def __init__(self, store: ThreadedStore) -> None:
        self.store = store

    def startService(self) -> None:
        super().startService()
        opening = self.store.start()
        opening.addErrback(
            lambda f: self.log.failure("cannot open the chat store {path}", f,
                                       path=self.store.description)
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.store.stop()
