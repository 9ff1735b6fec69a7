# -*- test-case-name: tests.chat.test_directory -*-
"""
What the chat service must know about accounts and registered channels at
once, without waiting for the database: which nicks belong to accounts,
who is an IRC operator, and each registered channel's record.

L{StoreDirectory} keeps that in memory, read from the SQLite store (off
the reactor thread) at start and again every C{refreshInterval} seconds,
so that changes made with C{netservices chat-admin} while the server runs
are seen within that time; the server's own changes (channel modes,
topics, bans, operators) are written through at once.  It also keeps the
recent history of registered channels: read once per channel when it is
first seen, and written in batches at most every C{historyInterval}
seconds (at most C{historySize} entries wait per channel).
L{MemoryDirectory} is the same in memory only, for tests and for servers
without a store.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Iterable

import attrs
from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from netservices.chat.wire import foldCase

if TYPE_CHECKING:
    from netservices.chat.store import ChannelRecord, HistoryEntry

log = Logger(namespace="netservices.chat")


@attrs.frozen
class AccountSummary:
    """
    What the chat service keeps of an account: its name as registered and
    whether it may become an IRC operator.
    """

    name: str
    oper: bool = False


class MemoryDirectory:
    """
    Accounts and registered channels held in memory.

    @ivar accounts: account summaries by folded name.
    @ivar channels: registered channel records by folded name.
    @ivar saved: the records given to L{saveChannel}, in order (tests read
        it).
    """

    def __init__(
        self,
        accounts: Iterable[AccountSummary] = (),
        channels: Iterable[ChannelRecord] = (),
    ) -> None:
        self.accounts = {foldCase(a.name): a for a in accounts}
        self.channels = {foldCase(c.name): c for c in channels}
        self.saved: list[ChannelRecord] = []
        self.histories: dict[str, list[HistoryEntry]] = {}

    def account(self, name: str) -> AccountSummary | None:
        """
        @return: the account called C{name} (any case), or L{None}.
        """
        return self.accounts.get(foldCase(name))

    def channelRecord(self, name: str) -> ChannelRecord | None:
        """
        @return: the record of registered channel C{name}, or L{None}.
        """
        return self.channels.get(foldCase(name))

    def saveChannel(self, record: ChannelRecord) -> None:
        """
        Remember a registered channel's new state (and store it).
        """
        self.channels[foldCase(record.name)] = record
        self.saved.append(record)

    def channelHistory(self, name: str) -> list[HistoryEntry]:
        """
        @return: the stored history of registered channel C{name}, oldest
            first.
        """
        return list(self.histories.get(foldCase(name), ()))

    def saveHistory(self, name: str, entry: HistoryEntry, keep: int) -> None:
        """
        Add a message to a registered channel's stored history, which
        keeps the last C{keep}.
        """
        history = self.histories.setdefault(foldCase(name), [])
        history.append(entry)
        del history[:-keep]


class StoreDirectory(MemoryDirectory, service.Service):
    """
    A L{MemoryDirectory} kept in step with a
    L{netservices.chat.store.ThreadedStore}.
    """

    def __init__(
        self, store, clock, refreshInterval: float = 10.0, historyInterval: float = 1.0
    ) -> None:
        MemoryDirectory.__init__(self)
        self.store = store
        self.clock = clock
        self.refreshInterval = refreshInterval
        #: The server settings last read (see C{chat-admin setting}), and
        #: what to call when they change.
        self.settings: dict[str, str] = {}
        self.settingsChanged = lambda settings: None
        #: When set, what the registered channels read are given to instead
        #: of replacing L{channels} at once (a cluster node: every node
        #: must use the same records at the same point of the log).
        self.channelsRead = None
        self._readOnce = False
        self._whenRead: list = []
        self.historyInterval = historyInterval
        self._refresher: LoopingCall | None = None
        self._pending: dict[str, deque] = {}
        self._writeCall = None

    def startService(self) -> None:
        super().startService()
        refresher = self._refresher = LoopingCall(self.refresh)
        refresher.clock = self.clock
        refresher.start(self.refreshInterval, now=True)

    def stopService(self):
        super().stopService()
        if self._refresher is not None and self._refresher.running:
            self._refresher.stop()
        if self._writeCall is not None and self._writeCall.active():
            self._writeCall.cancel()
        return self.writeHistory()

    async def _refresh(self) -> None:
        accounts = await self.store.listAccounts()
        channels = await self.store.listChannels()
        settings = await self.store.listSettings()
        if settings != self.settings:
            self.settings = settings
            self.settingsChanged(settings)
        self.accounts = {
            foldCase(a.name): AccountSummary(a.name, a.oper) for a in accounts
        }
        if self.channelsRead is None:
            self.channels = {foldCase(c.name): c for c in channels}
        else:
            self.channelsRead(channels)
        for record in channels:
            folded = foldCase(record.name)
            if folded not in self.histories:
                self.histories[folded] = await self.store.getHistory(record.name)

    def refresh(self):
        """
        Read accounts and registered channels again.

        @return: a L{Deferred} that fires when done (failures are logged
            while the service runs, and the last good state is kept).
        """
        from twisted.internet.defer import Deferred

        done = Deferred.fromCoroutine(self._refresh())
        def failed(failure) -> None:
            # A refresh still reading when the server stops finds the
            # store closed: nothing to report.
            from netservices.chat.store import StoreError

            if not self.running:
                return
            if failure.check(StoreError):
                # Unreachable or refusing: one line says it (and why).
                log.warn("cannot read the chat store: {error}", error=failure.getErrorMessage())
            else:
                log.failure("cannot read the chat store", failure)

        done.addErrback(failed)
        done.addBoth(self._read)
        return done

    def _read(self, result):
        self._readOnce = True
        waiting, self._whenRead = self._whenRead, []
        for deferred in waiting:
            deferred.callback(None)
        return result

    def whenRead(self):
        """
        @return: a L{Deferred} that fires once the store has been read (or
            tried) for the first time.
        """
        from twisted.internet.defer import Deferred, succeed

        if self._readOnce:
            return succeed(None)
        waiting = Deferred()
        self._whenRead.append(waiting)
        return waiting

    def saveChannel(self, record: ChannelRecord) -> None:
        self.channels[foldCase(record.name)] = record
        saving = self.store.saveChannel(record)
        saving.addErrback(
            lambda f: log.failure("cannot save channel {name}", f, name=record.name)
        )

    def saveHistory(self, name: str, entry: HistoryEntry, keep: int) -> None:
        MemoryDirectory.saveHistory(self, name, entry, keep)
        folded = foldCase(name)
        pending = self._pending.get(folded)
        if pending is None:
            pending = self._pending[folded] = deque(maxlen=max(1, keep))
        pending.append((name, entry, keep))
        if self._writeCall is None:
            self._writeCall = self.clock.callLater(self.historyInterval, self.writeHistory)

    def writeHistory(self):
        """
        Write the history entries waiting, in one transaction.

        @return: a L{Deferred} that fires when done (failures are logged).
        """
        from twisted.internet.defer import succeed

        self._writeCall = None
        pending, self._pending = self._pending, {}
        entries = [(name, entry) for waiting in pending.values() for name, entry, _ in waiting]
        if not entries:
            return succeed(None)
        keep = max(keep for waiting in pending.values() for _, _, keep in waiting)
        writing = self.store.appendHistory(entries, keep)
        writing.addErrback(lambda f: log.failure("cannot save channel history", f))
        return writing
