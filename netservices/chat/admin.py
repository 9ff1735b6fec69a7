# -*- test-case-name: tests.chat.test_admin -*-
"""
C{netservices chat-admin}: accounts, IRC operators and registered channels
of the chat server, in its state directory, or in the Redis of a cluster.

    netservices chat-admin [--data-dir DIR] user add|passwd|del|list|certfp ...
    netservices chat-admin [--data-dir DIR] oper grant|revoke NAME
    netservices chat-admin [--data-dir DIR] channel register|drop|list ...
    netservices chat-admin --cluster redis://HOST:PORT/DB user|oper|channel|setting ...

It works on the SQLite file directly (L{netservices.chat.store.Store}), or
with C{--cluster} on the cluster's Redis
(L{netservices.chat.redisstore.RedisStore}), also while the server runs:
the server sees the changes within its refresh interval.  Passwords are asked for twice on the terminal, or read
from the first line of C{--password-file} (C{-} for standard input); never
from the command line, where other users could read them.
"""

from __future__ import annotations

import datetime
import getpass
import sys
import time
from pathlib import Path

from twisted.python import usage

from netservices._common.client import ClientError, InterspersedOptions
from netservices.chat.store import (
    DATABASE_NAME,
    Account,
    AccountOwnsChannels,
    ChannelRecord,
    Store,
    StoreError,
    checkAccountName,
    checkChannelName,
    normalizeFingerprint,
)
from netservices.chat.wire import checkServerName

#: Shortest password accepted.
MIN_PASSWORD = 8

#: Longest password accepted, in UTF-8 bytes: C{PASS account:password}
#: must fit in one IRC line.
MAX_PASSWORD = 400


def _accountName(name: str) -> str:
    try:
        return checkAccountName(name)
    except ValueError as e:
        raise usage.UsageError(str(e))


def _channelName(name: str) -> str:
    try:
        return checkChannelName(name)
    except ValueError as e:
        raise usage.UsageError(f"{e}; quote it for the shell")


def _created(when: float) -> str:
    moment = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [header, *rows]
    )


class _Group(usage.Options):
    """
    A level of C{chat-admin} that only chooses the next one.
    """

    def postOptions(self) -> None:
        if self.subCommand is None:
            names = [command[0] for command in self.subCommands]
            raise usage.UsageError(f"choose {', '.join(names[:-1])} or {names[-1]}")


class _Command(InterspersedOptions):
    """
    A leaf of C{chat-admin}: runs on the store of the chosen directory.

    @cvar creates: whether the command may create the state directory and
        the database (only C{user add}: any other command on a directory
        without one is a mistake in C{--data-dir}).
    """

    creates = False
    longdesc = ""

    def openStore(self) -> Store:
        """
        @return: the store of C{--cluster}, or else of C{--data-dir}.
        @raise ClientError: if it cannot be opened, or does not exist and
            this command does not create it.
        """
        cluster = self.parent.parent["cluster"]
        if cluster is not None:
            from netservices.chat.redisstore import RedisStore

            try:
                return RedisStore.open(cluster)
            except StoreError as e:
                raise ClientError(str(e))
        directory = Path(self.parent.parent["data-dir"])
        path = directory / DATABASE_NAME
        if self.creates:
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as e:
                raise ClientError(f"cannot use state directory {directory}: {e.strerror}")
        elif not path.exists():
            raise ClientError(
                f"no chat database in {directory} (wrong --data-dir? `user add` creates it)"
            )
        try:
            return Store.open(path)
        except StoreError as e:
            raise ClientError(str(e))

    async def run(self, reactor) -> int:
        """
        Open the store, do the command, close the store.

        @return: the exit status (0).
        """
        self.prepare()
        store = self.openStore()
        try:
            self.execute(store)
        except AccountOwnsChannels as e:
            them = "them" if len(e.channels) > 1 else "it"
            raise ClientError(f"{e}; drop {them} first, or use --force")
        except (StoreError, ValueError) as e:
            raise ClientError(str(e))
        finally:
            store.close()
        return 0

    def prepare(self) -> None:
        """
        Check what can be checked before the store is opened (or created).
        """

    def execute(self, store: Store) -> None:
        raise NotImplementedError()


class _NameCommand(_Command):
    """
    A command on one account: C{NAME}.
    """

    synopsis = "NAME"

    def parseArgs(self, name: str) -> None:
        self["name"] = _accountName(name)


def readPasswordFile(path: str) -> str:
    """
    @return: the first line of file C{path} (standard input for C{-}),
        without its line end.
    @raise ClientError: if it cannot be read or is not UTF-8.
    """
    try:
        if path == "-":
            data = sys.stdin.buffer.readline()
        else:
            with open(path, "rb") as f:
                data = f.readline()
        return data.decode("utf-8").rstrip("\r\n")
    except OSError as e:
        raise ClientError(f"cannot read password file {path}: {e.strerror}")
    except UnicodeDecodeError:
        raise ClientError(f"password file {path}: the first line is not UTF-8")


def checkPassword(password: str) -> str:
    """
    @return: C{password}, if it can be one.
    @raise ClientError: if it is empty, shorter than L{MIN_PASSWORD}
        characters, longer than L{MAX_PASSWORD} bytes, or holds NUL.
    """
    if not password:
        raise ClientError("empty password refused")
    if len(password) < MIN_PASSWORD:
        raise ClientError(f"password too short: at least {MIN_PASSWORD} characters")
    if len(password.encode("utf-8")) > MAX_PASSWORD:
        raise ClientError(f"password too long: at most {MAX_PASSWORD} bytes")
    if "\0" in password:
        raise ClientError("a password cannot contain NUL")
    return password


class _PasswordCommand(_NameCommand):
    """
    A command that sets a password: asked twice, or C{--password-file}.
    """

    optParameters = [
        [
            "password-file",
            None,
            None,
            "Read the password from the first line of this file (- for standard"
            " input) instead of asking for it on the terminal.",
        ]
    ]

    _password: str | None = None

    def prepare(self) -> None:
        """
        Read and check the password file, if there is one, or check that
        there is a terminal to ask on.
        """
        if self["password-file"] is not None:
            self._password = checkPassword(readPasswordFile(self["password-file"]))
        elif not sys.stdin.isatty():
            raise ClientError("no terminal to ask for the password: use --password-file")

    def password(self) -> str:
        """
        @return: the new password, checked.
        @raise ClientError: if there is none, or the two typed differ.
        """
        if self._password is not None:
            return self._password
        if not sys.stdin.isatty():
            raise ClientError("no terminal to ask for the password: use --password-file")
        try:
            first = getpass.getpass(f"Password for {self['name']}: ")
            checkPassword(first)
            second = getpass.getpass("Same password again: ")
        except (EOFError, KeyboardInterrupt):
            raise ClientError("no password given (without a terminal, use --password-file)")
        if first != second:
            raise ClientError("the passwords typed differ")
        return first

    def hashed(self) -> str:
        """
        @return: the new password's hash.
        """
        from netservices.chat.accounts import PasswordHasher

        return PasswordHasher().hash(self.password())


class UserAddOptions(_PasswordCommand):
    """
    C{user add NAME}.
    """

    creates = True
    longdesc = (
        f"Register account NAME (a valid nick). The password (at least {MIN_PASSWORD}"
        " characters) is asked for twice, or read with --password-file; it is"
        " stored as an Argon2id hash."
    )

    def execute(self, store: Store) -> None:
        name = self["name"]
        if store.getAccount(name) is not None:
            raise ClientError(f"account {name} exists already")
        store.addAccount(Account(name, self.hashed(), created=time.time()))
        print(f"added account {name}")


class UserPasswdOptions(_PasswordCommand):
    """
    C{user passwd NAME}.
    """

    longdesc = "Set a new password for account NAME (asked twice, or --password-file)."

    def execute(self, store: Store) -> None:
        account = store.getAccount(self["name"])
        if account is None:
            raise ClientError(f"no account {self['name']}")
        store.setPassword(account.name, self.hashed())
        print(f"new password for account {account.name}")


class UserDelOptions(_NameCommand):
    """
    C{user del NAME [--force]}.
    """

    longdesc = (
        "Delete account NAME and take it off every channel's operator list."
        " Refused while it founded registered channels, unless --force, which"
        " drops them too."
    )
    optFlags = [["force", None, "Also drop the registered channels the account founded."]]

    def execute(self, store: Store) -> None:
        store.deleteAccount(self["name"], force=self["force"])
        print(f"deleted account {self['name']}")


class _ListCommand(_Command):
    """
    A command that prints a table, or a line saying it would be empty.

    @cvar empty: that line.
    @cvar header: the table's column names.
    """

    empty: str
    header: list[str]

    def parseArgs(self) -> None:
        pass

    def rows(self, store: Store) -> list[list[str]]:
        raise NotImplementedError()

    def execute(self, store: Store) -> None:
        rows = self.rows(store)
        print(_table(self.header, rows) if rows else self.empty)


class UserListOptions(_ListCommand):
    """
    C{user list}.
    """

    longdesc = "List the accounts: name, IRC operator or not, created, client certificate."
    empty = "no accounts"
    header = ["NAME", "OPER", "CREATED", "CERTIFICATE"]

    def rows(self, store: Store) -> list[list[str]]:
        return [
            [a.name, "yes" if a.oper else "no", _created(a.created),
             "yes" if a.certificateFingerprint else "no"]
            for a in store.listAccounts()
        ]


class UserCertfpOptions(_Command):
    """
    C{user certfp NAME FINGERPRINT|--clear}.
    """

    synopsis = "NAME FINGERPRINT | NAME --clear"
    longdesc = (
        "Register the SHA-256 fingerprint of a TLS client certificate (64 hex"
        " digits, colons allowed: `openssl x509 -noout -fingerprint -sha256 -in"
        " cert.pem`) with which account NAME logs in by SASL EXTERNAL; --clear"
        " forgets it."
    )
    optFlags = [["clear", None, "Forget the account's certificate fingerprint."]]

    def parseArgs(self, name: str, fingerprint: str | None = None) -> None:
        self["name"] = _accountName(name)
        if fingerprint is not None:
            try:
                fingerprint = normalizeFingerprint(fingerprint)
            except ValueError as e:
                raise usage.UsageError(str(e))
        self["fingerprint"] = fingerprint

    def postOptions(self) -> None:
        if (self["fingerprint"] is None) == (not self["clear"]):
            raise usage.UsageError("give a FINGERPRINT or --clear, not both")

    def execute(self, store: Store) -> None:
        store.setCertificateFingerprint(self["name"], self["fingerprint"])
        if self["fingerprint"] is None:
            print(f"account {self['name']} has no certificate now")
        else:
            print(f"account {self['name']} logs in with certificate {self['fingerprint']}")


class UserOptions(_Group):
    """
    C{chat-admin user}.
    """

    synopsis = "add|passwd|del|list|certfp ..."
    longdesc = "Manage accounts."
    subCommands = [
        ["add", None, UserAddOptions, "Register an account."],
        ["passwd", None, UserPasswdOptions, "Set an account's password."],
        ["del", None, UserDelOptions, "Delete an account."],
        ["list", None, UserListOptions, "List the accounts."],
        ["certfp", None, UserCertfpOptions, "Set or clear an account's client certificate."],
    ]


class _OperCommand(_NameCommand):
    """
    C{oper grant|revoke NAME}.

    @cvar grant: whether the account may become an IRC operator after.
    """

    grant: bool

    def execute(self, store: Store) -> None:
        store.setOper(self["name"], self.grant)
        print(f"account {self['name']} may {'' if self.grant else 'not '}be an IRC operator")


class OperGrantOptions(_OperCommand):
    """
    C{oper grant NAME}.
    """

    grant = True
    longdesc = "Let account NAME become an IRC operator (OPER, over TLS)."


class OperRevokeOptions(_OperCommand):
    """
    C{oper revoke NAME}.
    """

    grant = False
    longdesc = "Stop account NAME from becoming an IRC operator."


class OperOptions(_Group):
    """
    C{chat-admin oper}.
    """

    synopsis = "grant|revoke NAME"
    longdesc = "Grant or revoke IRC operator rights."
    subCommands = [
        ["grant", None, OperGrantOptions, "Let an account become an IRC operator."],
        ["revoke", None, OperRevokeOptions, "Stop an account from becoming an IRC operator."],
    ]


class _ChannelCommand(_Command):
    synopsis = "#NAME"

    def parseArgs(self, name: str) -> None:
        self["name"] = _channelName(name)


class ChannelRegisterOptions(_ChannelCommand):
    """
    C{channel register #NAME --founder ACCOUNT}.
    """

    synopsis = "#NAME --founder ACCOUNT"
    longdesc = (
        "Register channel #NAME (quote it for the shell) with its founder's"
        " account: it keeps its modes, topic, bans and operators across"
        " restarts, and its founder gets @ on joining logged in."
    )
    optParameters = [["founder", None, None, "The founder's account (required)."]]

    def postOptions(self) -> None:
        if self["founder"] is None:
            raise usage.UsageError("--founder ACCOUNT is required")
        _accountName(self["founder"])

    def execute(self, store: Store) -> None:
        store.registerChannel(ChannelRecord(self["name"], self["founder"]))
        print(f"registered channel {self['name']} (founder {self['founder']})")


class ChannelDropOptions(_ChannelCommand):
    """
    C{channel drop #NAME}.
    """

    longdesc = "Forget registered channel #NAME (its founder, modes, topic, bans, operators)."

    def execute(self, store: Store) -> None:
        store.dropChannel(self["name"])
        print(f"dropped channel {self['name']}")


class ChannelListOptions(_ListCommand):
    """
    C{channel list}.
    """

    longdesc = "List the registered channels: name, founder, modes, topic."
    empty = "no registered channels"
    header = ["CHANNEL", "FOUNDER", "MODES", "TOPIC"]

    def rows(self, store: Store) -> list[list[str]]:
        return [
            [c.name, c.founder, "+" + c.modes if c.modes else "", c.topic]
            for c in store.listChannels()
        ]


class ChannelOptions(_Group):
    """
    C{chat-admin channel}.
    """

    synopsis = "register|drop|list ..."
    longdesc = "Manage registered channels."
    subCommands = [
        ["register", None, ChannelRegisterOptions, "Register a channel with a founder."],
        ["drop", None, ChannelDropOptions, "Forget a registered channel."],
        ["list", None, ChannelListOptions, "List the registered channels."],
    ]


#: The settings the chat server reads from the store (at start, and again
#: on SIGHUP or REHASH), with what they do.
SETTINGS = {
    "motd": "the message of the day (lines separated by \\n); motd.txt is then ignored",
    "network": "the network name in the welcome and ISUPPORT NETWORK=",
}


class _SettingCommand(_Command):
    """
    A command on one setting: C{KEY}.
    """

    def parseArgs(self, key: str, *value: str) -> None:
        if key not in SETTINGS:
            raise usage.UsageError(f"unknown setting {key!r}: one of {', '.join(SETTINGS)}")
        self["key"] = key
        self["value"] = value


class SettingSetOptions(_SettingCommand):
    """
    C{setting set KEY VALUE}.
    """

    longdesc = "Set a server setting: " + "; ".join(f"{k}: {v}" for k, v in SETTINGS.items())

    def prepare(self) -> None:
        if len(self["value"]) != 1:
            raise usage.UsageError("give the value as one argument (quote it)")

    def execute(self, store: Store) -> None:
        value = self["value"][0].replace("\\n", "\n")
        if self["key"] == "network":
            value = checkServerName(value)
        store.setSetting(self["key"], value)
        print(f"set {self['key']} (the server reads it within 10 s, or at once on SIGHUP)")


class SettingUnsetOptions(_SettingCommand):
    """
    C{setting unset KEY}.
    """

    longdesc = "Forget a server setting (the server's default applies again)."

    def execute(self, store: Store) -> None:
        store.deleteSetting(self["key"])
        print(f"unset {self['key']}")


class SettingListOptions(_ListCommand):
    """
    C{setting list}.
    """

    longdesc = "List the server settings that are set."
    empty = "no settings"
    header = ["SETTING", "VALUE"]

    def rows(self, store: Store) -> list[list[str]]:
        return [
            [key, value.replace("\n", "\\n")] for key, value in store.listSettings().items()
        ]


class SettingOptions(_Group):
    """
    C{chat-admin setting}.
    """

    synopsis = "set|unset|list ..."
    longdesc = "Server settings kept in the store: " + ", ".join(SETTINGS) + "."
    subCommands = [
        ["set", None, SettingSetOptions, "Set a setting."],
        ["unset", None, SettingUnsetOptions, "Forget a setting."],
        ["list", None, SettingListOptions, "List the settings."],
    ]


def _clusterAddress(url: str):
    from netservices.chat.tap import _clusterAddress as serverClusterAddress

    # The server's own parsing and messages.
    return serverClusterAddress(url)


_clusterAddress.coerceDoc = "A redis:// URL."


class ChatAdminOptions(_Group):
    """
    C{netservices chat-admin}.
    """

    synopsis = "[--data-dir DIR | --cluster redis://HOST:PORT/DB] user|oper|channel|setting ..."
    longdesc = (
        "Manage the chat server's accounts, IRC operators and registered"
        " channels, in the SQLite file (chat.sqlite3) of its state directory,"
        " or with --cluster in the Redis of a cluster (where the nodes of"
        " twistd netservices chat --cluster keep them); also while the server"
        " runs. Run it as the user the server runs as."
        " Exit status: 0 done, 1 refused or failed, 2 bad usage."
    )
    optParameters = [
        [
            "data-dir",
            None,
            None,
            "The chat server's state directory. Default: as for twistd netservices"
            " chat (/var/lib/netservices/chat for root, else"
            " $XDG_STATE_HOME/netservices/chat).",
        ],
        [
            "cluster",
            None,
            None,
            "Manage the accounts, operators, channels and settings of the cluster"
            " whose nodes run with this --cluster URL (redis://HOST:PORT/DB), in"
            " that Redis, instead of a state directory's; not with --data-dir",
            _clusterAddress,
        ],
    ]
    subCommands = [
        ["user", None, UserOptions, "Add, delete, list accounts; passwords, certificates."],
        ["oper", None, OperOptions, "Grant or revoke IRC operator rights."],
        ["channel", None, ChannelOptions, "Register, drop, list channels."],
        ["setting", None, SettingOptions, "Server settings: " + ", ".join(SETTINGS) + "."],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["cluster"] is not None:
            if self["data-dir"] is not None:
                raise usage.UsageError(
                    "--cluster and --data-dir exclude each other (a cluster keeps its"
                    " accounts in Redis)"
                )
        elif self["data-dir"] is None:
            from netservices.chat.tap import defaultDataDirectory

            self["data-dir"] = str(defaultDataDirectory())
