# -*- test-case-name: tests.chat.test_directory -*-
"""
What the chat service must know about accounts and registered channels at
once, without waiting for the database: which nicks belong to accounts,
who is an IRC operator, and each registered channel's record.

L{StoreDirectory} keeps that in memory, read from the SQLite store (off
the reactor thread) at start and again every C{refreshInterval} seconds,
so that changes made with C{netservices chat-admin} while the server runs
are seen within that time; the server's own changes (channel modes,
topics, bans, operators) are written through at once.
L{MemoryDirectory} is the same in memory only, for tests and for servers
without a store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import attrs
from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from netservices.chat.wire import foldCase

if TYPE_CHECKING:
    from netservices.chat.store import ChannelRecord

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


class StoreDirectory(MemoryDirectory, service.Service):
    """
    A L{MemoryDirectory} kept in step with a
    L{netservices.chat.store.ThreadedStore}.
    """

    def __init__(self, store, clock, refreshInterval: float = 10.0) -> None:
        MemoryDirectory.__init__(self)
        self.store = store
        self.clock = clock
        self.refreshInterval = refreshInterval
        self._refresher: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        refresher = self._refresher = LoopingCall(self.refresh)
        refresher.clock = self.clock
        refresher.start(self.refreshInterval, now=True)

    def stopService(self):
        super().stopService()
        if self._refresher is not None and self._refresher.running:
            self._refresher.stop()

    async def _refresh(self) -> None:
        accounts = await self.store.listAccounts()
        channels = await self.store.listChannels()
        self.accounts = {
            foldCase(a.name): AccountSummary(a.name, a.oper) for a in accounts
        }
        self.channels = {foldCase(c.name): c for c in channels}

    def refresh(self):
        """
        Read accounts and registered channels again.

        @return: a L{Deferred} that fires when done (failures are logged,
            and the last good state is kept).
        """
        from twisted.internet.defer import Deferred

        done = Deferred.fromCoroutine(self._refresh())
        done.addErrback(lambda f: log.failure("cannot read the chat store", f))
        return done

    def saveChannel(self, record: ChannelRecord) -> None:
        self.channels[foldCase(record.name)] = record
        saving = self.store.saveChannel(record)
        saving.addErrback(
            lambda f: log.failure("cannot save channel {name}", f, name=record.name)
        )
