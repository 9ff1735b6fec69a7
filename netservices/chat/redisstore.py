# -*- test-case-name: tests.chat.test_redisstore -*-
"""
The chat server's persistent state in Redis, for a cluster whose nodes run
on several machines (C{--cluster}): L{RedisStore} has the methods of
L{netservices.chat.store.Store} (L{STORE_METHODS}), with the same
arguments, results, checks and exceptions, on the blocking C{redis}
client.  The server runs it on a thread of its own through
L{netservices.chat.store.ThreadedStore}; C{netservices chat-admin
--cluster} uses it directly.

Keys, under C{netservices:chat:store:} (the cluster's log is under
C{netservices:chat:} too, in C{log}, C{epoch}, C{node:*} and
C{snapshot}):
 - C{schema}: the version of this layout (L{SCHEMA_VERSION});
 - C{accounts}: a hash, folded account name to the account as JSON;
 - C{fingerprints}: a hash, certificate fingerprint to the name of the
   account that registered it (which makes it unique);
 - C{channels}: a hash, folded channel name to the record as JSON (the
   founder as the account is spelled);
 - C{history:FOLDED}: a list, the history of a registered channel, oldest
   first, each entry as JSON;
 - C{settings}: a hash, setting to value.

Every change that depends on what is stored (an account that must not
exist yet, a founder that must exist, a fingerprint free, an account
deleted only if it founded nothing, unless forced) runs as one
C{WATCH}/C{MULTI}/C{EXEC} transaction that is tried again from its reads
when another writer changed what it watched first, so that writers in
several processes never interleave; history is appended by a Lua script,
which Redis runs at once as a whole.

Durability: a change is acknowledged once Redis has applied it.  It
survives a Redis restart only with persistence: run Redis with
C{appendonly yes}, and C{appendfsync always} for every acknowledged change
to survive a crash of the machine too (C{everysec} may lose the last
second).

Names are compared under the C{ascii} case mapping (L{foldCase}) and kept
as they were first typed, as in the SQLite store.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import TYPE_CHECKING

import attrs
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from netservices.chat.store import (
    MAX_HISTORY,
    Account,
    AccountExists,
    AccountOwnsChannels,
    ChannelExists,
    ChannelRecord,
    FingerprintInUse,
    HistoryEntry,
    NoSuchAccount,
    NoSuchChannel,
    StoreError,
    _checkAccount,
    _checkPasswordHash,
    _checkRecord,
    _checkSetting,
    checkAccountName,
    channelRecordFromFields,
    checkChannelName,
    normalizeFingerprint,
)
from netservices.chat.wire import foldCase, validChannel, validNick

if TYPE_CHECKING:
    from netservices.chat.redislog import RedisAddress

#: What every key of the store starts with.
KEY_PREFIX = "netservices:chat:store:"

#: The layout this code reads and writes (the C{schema} key).
SCHEMA_VERSION = 1

#: Seconds to connect, and to wait for each answer.
TIMEOUT = 5.0

SCHEMA = KEY_PREFIX + "schema"
ACCOUNTS = KEY_PREFIX + "accounts"
FINGERPRINTS = KEY_PREFIX + "fingerprints"
CHANNELS = KEY_PREFIX + "channels"
SETTINGS = KEY_PREFIX + "settings"


def historyKey(folded: str) -> str:
    """
    @return: the key of the history of the channel whose folded name is
        C{folded}.
    """
    return f"{KEY_PREFIX}history:{folded}"


#: Appends history entries of registered channels and trims each list.
#: KEYS[1]: the channels hash; KEYS[2...]: history lists.  ARGV[1]: how
#: many entries each list keeps; then, for each entry, the index in KEYS of
#: its list, its channel's folded name and the entry.
_APPEND_HISTORY = """
local keep = tonumber(ARGV[1])
local touched = {}
for i = 2, #ARGV, 3 do
    if redis.call("HEXISTS", KEYS[1], ARGV[i + 1]) == 1 then
        local key = KEYS[tonumber(ARGV[i])]
        redis.call("RPUSH", key, ARGV[i + 2])
        touched[key] = true
    end
end
for key in pairs(touched) do
    if keep == 0 then
        redis.call("DEL", key)
    else
        redis.call("LTRIM", key, -keep, -1)
    end
end
return 0
"""


def _dumpAccount(account: Account) -> str:
    return json.dumps(attrs.asdict(account))


def _loadAccount(text: str) -> Account:
    return Account(**json.loads(text))


def _dumpChannel(record: ChannelRecord) -> str:
    return json.dumps(attrs.asdict(record))


def _loadChannel(text: str) -> ChannelRecord:
    return channelRecordFromFields(json.loads(text))


def _dumpEntry(entry: HistoryEntry) -> str:
    return json.dumps(
        [float(entry.time), entry.msgid, base64.b64encode(entry.line).decode("ascii"),
         entry.account, [list(pair) for pair in entry.tags]]
    )


def _loadEntry(text: str) -> HistoryEntry:
    time, msgid, line, account, tags = json.loads(text)
    return HistoryEntry(
        time, msgid, base64.b64decode(line), account,
        tuple((str(k), str(v)) for k, v in tags),
    )


def _oneLine(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _talking(method):
    """
    Check the layout before the first call that reaches Redis, and turn
    the client's errors (Redis unreachable, refusing) into L{StoreError}s
    of one line.
    """

    @functools.wraps(method)
    def talk(self: RedisStore, *args, **kwargs):
        try:
            if not self._checked:
                self._checkSchema()
            return method(self, *args, **kwargs)
        except redis.RedisError as e:
            raise StoreError(f"chat store in Redis at {self.address}: {_oneLine(e)}") from e

    return talk


class RedisStore:
    """
    The chat state in Redis (see the module docstring), with the methods
    and semantics of L{netservices.chat.store.Store}: L{ValueError} for
    names or values that can never be stored, a L{StoreError} for refusals
    that depend on what is stored, and also for Redis being unreachable or
    refusing.

    @ivar address: where Redis is.
    """

    def __init__(self, client: redis.Redis, address: RedisAddress) -> None:
        self._redis = client
        self.address = address
        self._checked = False
        self._appendHistory = client.register_script(_APPEND_HISTORY)

    @classmethod
    def connect(cls, address: RedisAddress, timeout: float = TIMEOUT) -> RedisStore:
        """
        @return: a store for the Redis at C{address}, which is not reached
            yet: the first call checks the layout, and each call connects
            again if needed (the server's store, which must survive Redis
            being away for a while).
        """
        client = redis.Redis(
            host=address.host, port=address.port, db=address.db,
            socket_timeout=timeout, socket_connect_timeout=timeout,
            decode_responses=True,
            # One more try at once, on a new connection: enough for one
            # that Redis closed while idle, and not minutes of retries.
            retry=Retry(NoBackoff(), 1),
        )
        return cls(client, address)

    @classmethod
    def open(cls, address: RedisAddress, timeout: float = TIMEOUT) -> RedisStore:
        """
        Connect to the Redis at C{address} and check the layout there
        (writing it first if there is none).

        @raise StoreError: with one line, if Redis is unreachable or
            refuses, or holds a newer layout.
        """
        store = cls.connect(address, timeout)
        try:
            store.schemaVersion()
        except StoreError:
            store.close()
            raise
        return store

    def close(self) -> None:
        """
        Close the connections.
        """
        self._redis.close()

    def _checkSchema(self) -> None:
        _, version = (
            self._redis.pipeline().set(SCHEMA, SCHEMA_VERSION, nx=True).get(SCHEMA).execute()
        )
        if not (version.isascii() and version.isdigit()):
            raise StoreError(f"{self.address}: {SCHEMA} holds {version[:40]!r}, not a version")
        if int(version) > SCHEMA_VERSION:
            raise StoreError(
                f"{self.address} has chat store schema version {version}, newer than this"
                f" version of netservices knows ({SCHEMA_VERSION})"
            )
        self._checked = True

    def _transaction(self, change, *keys: str):
        """
        Run C{change(pipe)} with C{keys} watched, again from the start
        whenever another writer changed one of them before it committed.
        C{change} reads through C{pipe}, raises to change nothing, or calls
        C{pipe.multi()} and queues its writes.
        """
        return self._redis.transaction(change, *keys, value_from_callable=True)

    def _lookup(self, key: str, name: object, valid, load):
        """
        @return: what C{load} makes of the field of hash C{key} for name
            C{name} (in any case), or L{None}; also L{None} for a name that
            is not C{valid}.
        """
        if not isinstance(name, str) or not valid(name):
            return None
        text = self._redis.hget(key, foldCase(name))
        return None if text is None else load(text)

    @_talking
    def schemaVersion(self) -> int:
        """
        @return: the version of the layout in Redis.
        """
        return int(self._redis.get(SCHEMA))

    # Accounts

    @staticmethod
    def _existingAccount(pipe, name: str) -> Account:
        text = pipe.hget(ACCOUNTS, foldCase(checkAccountName(name)))
        if text is None:
            raise NoSuchAccount(f"no account {name}")
        return _loadAccount(text)

    @staticmethod
    def _checkFingerprintFree(pipe, fingerprint: str | None, folded: str) -> None:
        if fingerprint is None:
            return
        owner = pipe.hget(FINGERPRINTS, fingerprint)
        if owner is not None and foldCase(owner) != folded:
            raise FingerprintInUse(f"account {owner} has that certificate fingerprint already")

    @_talking
    def addAccount(self, account: Account) -> None:
        """
        As L{netservices.chat.store.Store.addAccount}.
        """
        account = _checkAccount(account)
        folded, fingerprint = foldCase(account.name), account.certificateFingerprint

        def add(pipe) -> None:
            if pipe.hexists(ACCOUNTS, folded):
                raise AccountExists(f"account {account.name} exists already")
            self._checkFingerprintFree(pipe, fingerprint, folded)
            pipe.multi()
            pipe.hset(ACCOUNTS, folded, _dumpAccount(account))
            if fingerprint is not None:
                pipe.hset(FINGERPRINTS, fingerprint, account.name)

        self._transaction(add, ACCOUNTS, FINGERPRINTS)

    @_talking
    def getAccount(self, name: str) -> Account | None:
        """
        As L{netservices.chat.store.Store.getAccount}.
        """
        return self._lookup(ACCOUNTS, name, validNick, _loadAccount)

    def _changeAccount(self, name: str, **changes) -> None:
        def change(pipe) -> None:
            account = self._existingAccount(pipe, name)
            pipe.multi()
            pipe.hset(ACCOUNTS, foldCase(name), _dumpAccount(attrs.evolve(account, **changes)))

        self._transaction(change, ACCOUNTS)

    @_talking
    def setPassword(self, name: str, passwordHash: str) -> None:
        """
        As L{netservices.chat.store.Store.setPassword}.
        """
        self._changeAccount(name, passwordHash=_checkPasswordHash(passwordHash))

    @_talking
    def setOper(self, name: str, oper: bool) -> None:
        """
        As L{netservices.chat.store.Store.setOper}.
        """
        self._changeAccount(name, oper=bool(oper))

    @_talking
    def setCertificateFingerprint(self, name: str, fingerprint: str | None) -> None:
        """
        As L{netservices.chat.store.Store.setCertificateFingerprint}.
        """
        if fingerprint is not None:
            fingerprint = normalizeFingerprint(fingerprint)

        def change(pipe) -> None:
            account = self._existingAccount(pipe, name)
            folded = foldCase(name)
            self._checkFingerprintFree(pipe, fingerprint, folded)
            pipe.multi()
            if account.certificateFingerprint is not None:
                pipe.hdel(FINGERPRINTS, account.certificateFingerprint)
            if fingerprint is not None:
                pipe.hset(FINGERPRINTS, fingerprint, account.name)
            changed = attrs.evolve(account, certificateFingerprint=fingerprint)
            pipe.hset(ACCOUNTS, folded, _dumpAccount(changed))

        self._transaction(change, ACCOUNTS, FINGERPRINTS)

    @_talking
    def accountForFingerprint(self, fingerprint: str) -> str | None:
        """
        As L{netservices.chat.store.Store.accountForFingerprint}.
        """
        try:
            fingerprint = normalizeFingerprint(fingerprint)
        except ValueError:
            return None
        return self._redis.hget(FINGERPRINTS, fingerprint)

    @_talking
    def deleteAccount(self, name: str, force: bool = False) -> None:
        """
        As L{netservices.chat.store.Store.deleteAccount}.
        """

        def delete(pipe) -> None:
            account = self._existingAccount(pipe, name)
            folded = foldCase(name)
            channels = {f: _loadChannel(text) for f, text in pipe.hgetall(CHANNELS).items()}
            founded = sorted(f for f, r in channels.items() if foldCase(r.founder) == folded)
            if founded and not force:
                raise AccountOwnsChannels(name, [channels[f].name for f in founded])
            pipe.multi()
            for channel in founded:
                pipe.hdel(CHANNELS, channel)
                pipe.delete(historyKey(channel))
                del channels[channel]
            for channel, record in channels.items():
                kept = tuple(n for n in record.operators if foldCase(n) != folded)
                if kept != record.operators:
                    pipe.hset(CHANNELS, channel, _dumpChannel(attrs.evolve(record, operators=kept)))
            if account.certificateFingerprint is not None:
                pipe.hdel(FINGERPRINTS, account.certificateFingerprint)
            pipe.hdel(ACCOUNTS, folded)

        self._transaction(delete, ACCOUNTS, FINGERPRINTS, CHANNELS)

    @_talking
    def listAccounts(self) -> list[Account]:
        """
        As L{netservices.chat.store.Store.listAccounts}.
        """
        return [_loadAccount(text) for _, text in sorted(self._redis.hgetall(ACCOUNTS).items())]

    # Channels

    @_talking
    def registerChannel(self, record: ChannelRecord) -> None:
        """
        As L{netservices.chat.store.Store.registerChannel}.
        """
        _checkRecord(record)
        folded = foldCase(record.name)

        def register(pipe) -> None:
            if pipe.hexists(CHANNELS, folded):
                raise ChannelExists(f"channel {record.name} is registered already")
            founder = self._existingAccount(pipe, record.founder)
            pipe.multi()
            pipe.hset(CHANNELS, folded, _dumpChannel(attrs.evolve(record, founder=founder.name)))
            pipe.delete(historyKey(folded))

        # The founder's account is watched too: deleting it concurrently
        # would leave a channel without a founder.
        self._transaction(register, CHANNELS, ACCOUNTS)

    @_talking
    def getChannel(self, name: str) -> ChannelRecord | None:
        """
        As L{netservices.chat.store.Store.getChannel}.
        """
        return self._lookup(CHANNELS, name, validChannel, _loadChannel)

    @_talking
    def saveChannel(self, record: ChannelRecord) -> None:
        """
        As L{netservices.chat.store.Store.saveChannel}.
        """
        _checkRecord(record)
        folded = foldCase(record.name)

        def save(pipe) -> None:
            text = pipe.hget(CHANNELS, folded)
            if text is None:
                raise NoSuchChannel(f"channel {record.name} is not registered")
            stored = _loadChannel(text)
            pipe.multi()
            pipe.hset(
                CHANNELS, folded,
                _dumpChannel(attrs.evolve(record, name=stored.name, founder=stored.founder)),
            )

        self._transaction(save, CHANNELS)

    @_talking
    def dropChannel(self, name: str) -> None:
        """
        As L{netservices.chat.store.Store.dropChannel}.
        """
        folded = foldCase(checkChannelName(name))
        deleted, _ = (
            self._redis.pipeline().hdel(CHANNELS, folded).delete(historyKey(folded)).execute()
        )
        if not deleted:
            raise NoSuchChannel(f"channel {name} is not registered")

    @_talking
    def listChannels(self) -> list[ChannelRecord]:
        """
        As L{netservices.chat.store.Store.listChannels}.
        """
        return [_loadChannel(text) for _, text in sorted(self._redis.hgetall(CHANNELS).items())]

    # History

    @_talking
    def appendHistory(self, entries: list[tuple[str, HistoryEntry]], keep: int = MAX_HISTORY) -> None:
        """
        As L{netservices.chat.store.Store.appendHistory}.
        """
        keep = max(0, min(keep, MAX_HISTORY))
        keys = [CHANNELS]
        indexes: dict[str, int] = {}
        arguments: list = [keep]
        for name, entry in entries:
            folded = foldCase(name)
            if folded not in indexes:
                keys.append(historyKey(folded))
                indexes[folded] = len(keys)
            arguments += [indexes[folded], folded, _dumpEntry(entry)]
        if entries:
            self._appendHistory(keys=keys, args=arguments)

    @_talking
    def getHistory(self, name: str, limit: int = MAX_HISTORY) -> list[HistoryEntry]:
        """
        As L{netservices.chat.store.Store.getHistory}.
        """
        limit = max(0, min(limit, MAX_HISTORY))
        if limit == 0:
            return []
        return [_loadEntry(text) for text in self._redis.lrange(historyKey(foldCase(name)), -limit, -1)]

    # Settings

    @_talking
    def getSetting(self, key: str) -> str | None:
        """
        As L{netservices.chat.store.Store.getSetting}.
        """
        return self._redis.hget(SETTINGS, key)

    @_talking
    def setSetting(self, key: str, value: str) -> None:
        """
        As L{netservices.chat.store.Store.setSetting}.
        """
        _checkSetting(key, value)
        self._redis.hset(SETTINGS, key, value)

    @_talking
    def deleteSetting(self, key: str) -> None:
        """
        As L{netservices.chat.store.Store.deleteSetting}.
        """
        self._redis.hdel(SETTINGS, key)

    @_talking
    def listSettings(self) -> dict[str, str]:
        """
        As L{netservices.chat.store.Store.listSettings}.
        """
        return dict(sorted(self._redis.hgetall(SETTINGS).items()))

