# -*- test-case-name: tests.chat.test_login -*-
"""
Capabilities, logging in, nick ownership and IRC operators: the commands
of a chat connection that involve accounts (C{CAP}, C{AUTHENTICATE},
C{PASS}, C{OPER}, C{KILL}, C{WALLOPS}, C{REHASH}).

Credentials go to a C{twisted.cred} portal, and only over TLS or from a
loopback address: anywhere else the answer is a failure and the checker
is never called.  A nick that belongs to an account must be logged in to
within C{nickGrace} seconds, or its user is renamed to a guest nick.
"""

from __future__ import annotations

import base64
import binascii
from typing import Callable

import attrs
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred

from netservices._common.addresses import isLoopback
from netservices.chat import numerics
from netservices.chat.ircv3 import CAPABILITIES
from netservices.chat.service import ChatError
from netservices.chat.wire import encode, foldCase, truncateText


@attrs.frozen
class AccountSettings:
    """
    How a chat server handles accounts.

    @ivar portal: checks credentials and gives an avatar with C{name} and
        C{oper}; L{None}: no logins.
    @ivar requireAuth: refuse users who do not log in.
    @ivar nickGrace: seconds a user has to log in to the account that owns
        their nick before being renamed.
    @ivar stsPort: the TLS port advertised in the C{sts} capability on
        plaintext connections (L{None}: no STS).
    @ivar stsDuration: the C{sts} policy's duration, advertised on TLS.
    @ivar rehash: what C{REHASH} runs (reloading files and settings).
    @ivar register: creates an account (name, password) and fires with
        its name, failing with L{RegistrationRefused}; L{None}: in-band
        registration (C{REGISTER}) is off.
    """

    portal: Portal | None = None
    requireAuth: bool = False
    nickGrace: float = 30.0
    stsPort: int | None = None
    stsDuration: int = 300
    rehash: Callable[[], object] = lambda: None
    register: Callable[[str, str], Deferred] | None = None


class RegistrationRefused(Exception):
    """
    An in-band registration that cannot be done: C{code} is the standard
    reply's code (C{ACCOUNT_EXISTS}, C{BAD_ACCOUNT_NAME}, C{WEAK_PASSWORD},
    C{TEMPORARILY_UNAVAILABLE}), C{text} what the user is told.
    """

    def __init__(self, code: str, text: str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text


#: The in-band registration capability (IRCv3 draft/account-registration):
#: registration needs a completed connection, no e-mail, and lets users
#: choose an account name other than their nick.
REGISTRATION_CAPABILITY = "draft/account-registration"
REGISTRATION_FLAGS = "custom-account-name"


#: SASL mechanisms, in the order offered.
MECHANISMS = ("PLAIN", "EXTERNAL")

#: Base64 SASL data beyond this is refused (905): PLAIN with a 30-byte
#: account and a long password fits several times over.
MAX_SASL = 1600


class AccountCommands:
    """
    A mixin of L{netservices.chat.protocol.ChatConnection}: the commands
    about capabilities, accounts and operators.  The connection keeps the
    state in its slots: C{capabilities}, C{_cap302}, C{_sasl},
    C{_authenticating}, C{_password}, C{nickDeadline}.
    """

    __slots__ = ()

    # Capabilities

    def availableCapabilities(self) -> dict[str, str | None]:
        """
        @return: the capabilities this connection may enable, with their
            CAP 302 values.
        """
        accounts = self.factory.accounts
        available: dict[str, str | None] = {"cap-notify": None}
        available.update(dict.fromkeys(CAPABILITIES))
        if accounts.portal is not None and self.credentialsAllowed():
            available["sasl"] = ",".join(MECHANISMS)
        if accounts.register is not None and self.user.secure:
            available[REGISTRATION_CAPABILITY] = REGISTRATION_FLAGS
        if accounts.stsPort is not None:
            if self.user.secure:
                available["sts"] = f"duration={accounts.stsDuration}"
            else:
                available["sts"] = f"port={accounts.stsPort}"
        return available

    def setCapabilities(self, capabilities: frozenset[str]) -> None:
        """
        Enable exactly C{capabilities}, here and in the chat service.
        """
        self.capabilities = frozenset(capabilities)
        self.service.setCapabilities(self.user, self.capabilities)

    def irc_CAP(self, params: tuple[str, ...]) -> None:
        if not params:
            raise NeedMoreParams()
        subcommand = params[0].upper()
        nick = self.user.nick or "*"
        if subcommand == "LS":
            if not self.user.registered:
                self._capNegotiating = True
            if len(params) > 1 and params[1].isdigit() and int(params[1]) >= 302:
                self._cap302 = True
                # CAP LS 302 implies cap-notify (IRCv3).
                self.setCapabilities(self.capabilities | {"cap-notify"})
            offered = [
                f"{name}={value}" if value and self._cap302 else name
                for name, value in sorted(self.availableCapabilities().items())
            ]
            self.send("CAP", nick, "LS", " ".join(offered))
        elif subcommand == "LIST":
            self.send("CAP", nick, "LIST", " ".join(sorted(self.capabilities)))
        elif subcommand == "REQ":
            if not self.user.registered:
                self._capNegotiating = True
            requested = params[1] if len(params) > 1 else ""
            self._requestCapabilities(nick, requested)
        elif subcommand == "END":
            self._capNegotiating = False
            self._tryRegister()
        else:
            self.sendNumeric(
                numerics.ERR_INVALIDCAPCMD, truncateText(params[0], 32) or "*",
                "Invalid CAP command",
            )

    def _requestCapabilities(self, nick: str, requested: str) -> None:
        """
        Enable and disable capabilities, all or none (IRCv3 CAP REQ).
        """
        available = self.availableCapabilities()
        enable, disable = set(), set()
        for token in requested.split():
            name = token[1:] if token.startswith("-") else token
            # sts is advertised, never requested.
            if name not in available or name == "sts":
                self.send("CAP", nick, "NAK", truncateText(requested, 400))
                return
            (disable if token.startswith("-") else enable).add(name)
        if not enable and not disable:
            self.send("CAP", nick, "NAK", truncateText(requested, 400))
            return
        self.setCapabilities((self.capabilities | enable) - disable)
        self.send("CAP", nick, "ACK", truncateText(requested, 400))

    # Logging in

    def credentialsAllowed(self) -> bool:
        """
        @return: whether this connection may send credentials: over TLS, or
            from a loopback address.
        """
        if self.user.secure:
            return True
        # (An IPv6 host written "0::1" is still ::1.)
        return isLoopback(self.user.host)

    def irc_AUTHENTICATE(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            raise NeedMoreParams()
        argument = params[0]
        if self.user.account is not None:
            self.sendNumeric(numerics.ERR_SASLALREADY, "You have already authenticated using SASL")
            return
        if self._authenticating:
            return
        if argument == "*":
            if self._sasl is not None:
                self._sasl = None
                self.sendNumeric(numerics.ERR_SASLABORTED, "SASL authentication aborted")
            return
        if self._sasl is None:
            self._startSASL(argument.upper())
            return
        mechanism, data = self._sasl
        if argument != "+":
            data += argument
        if len(data) > MAX_SASL:
            self._sasl = None
            self.sendNumeric(numerics.ERR_SASLTOOLONG, "SASL message too long")
            return
        if len(argument) == 400:
            # A full chunk: more follows (a '+' if nothing).
            self._sasl = (mechanism, data)
            return
        self._sasl = None
        self._finishSASL(mechanism, data)

    def _startSASL(self, mechanism: str) -> None:
        accounts = self.factory.accounts
        if accounts.portal is None or mechanism not in MECHANISMS:
            self.sendNumeric(numerics.RPL_SASLMECHS, ",".join(MECHANISMS), "are available SASL mechanisms")
            self.sendNumeric(numerics.ERR_SASLFAIL, "SASL authentication failed")
            return
        if not self.credentialsAllowed():
            self.refuse("credentials-in-clear")
            self.sendNumeric(numerics.ERR_SASLFAIL, "SASL authentication failed")
            return
        self._sasl = (mechanism, "")
        self.deliver(b"AUTHENTICATE +\r\n")

    def _finishSASL(self, mechanism: str, data: str) -> None:
        from netservices.chat.accounts import CertificateCredentials, SourcedCredentials

        try:
            payload = base64.b64decode(data.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            self.sendNumeric(numerics.ERR_SASLFAIL, "SASL authentication failed")
            return
        if mechanism == "EXTERNAL":
            from netservices._common.tls import peerCertificateFingerprint

            fingerprint = peerCertificateFingerprint(self.transport)
            requested = payload.decode("utf-8", "replace") or None
            if fingerprint is None:
                self.sendNumeric(numerics.ERR_SASLFAIL, "SASL authentication failed")
                return
            credentials = CertificateCredentials(fingerprint, requested)
        else:
            parts = payload.split(b"\0")
            if len(parts) != 3:
                self.sendNumeric(numerics.ERR_SASLFAIL, "SASL authentication failed")
                return
            try:
                authorize, account, password = (part.decode("utf-8") for part in parts)
            except UnicodeDecodeError:
                self.sendNumeric(numerics.ERR_SASLFAIL, "SASL authentication failed")
                return
            if authorize and foldCase(authorize) != foldCase(account):
                self.sendNumeric(numerics.ERR_SASLFAIL, "SASL authentication failed")
                return
            credentials = SourcedCredentials(
                account, password, self.user.host, self.user.secure
            )
        self._login(credentials, sasl=True)

    def irc_PASS(self, params: tuple[str, ...]) -> None:
        if self.user.registered:
            self.sendNumeric(numerics.ERR_ALREADYREGISTRED, "You may not reregister")
        elif not params or not params[0]:
            raise NeedMoreParams()
        else:
            self._password = params[0]

    def _passwordLogin(self) -> None:
        """
        Log in with what C{PASS} gave: C{account:password}, or a password
        for the account named like the nick.
        """
        from netservices.chat.accounts import SourcedCredentials

        password, self._password = self._password, None
        if self.factory.accounts.portal is None:
            return
        if not self.credentialsAllowed():
            self.refuse("credentials-in-clear")
            self.sendNumeric(numerics.ERR_PASSWDMISMATCH, "Password incorrect")
            self.disconnect("Credentials are only accepted over TLS")
            return
        account, colon, secret = password.partition(":")
        if not colon:
            account, secret = self.user.nick, password
        credentials = SourcedCredentials(account, secret, self.user.host, self.user.secure)
        self._login(credentials, sasl=False)

    def _login(self, credentials, sasl: bool) -> None:
        from netservices.chat.accounts import IChatAccount

        self._authenticating = True
        login = self.factory.accounts.portal.login(credentials, None, IChatAccount)
        login.addCallbacks(
            lambda result: self._loggedIn(result[1], sasl),
            lambda failure: self._loginFailed(failure, sasl),
        )
        login.addErrback(
            lambda failure: self.factory.log.failure("chat login failed", failure)
        )

    def _loggedIn(self, avatar, sasl: bool) -> None:
        self._authenticating = False
        if self._closingSince is not None:
            return
        self.completeLogin(avatar.name, "sasl" if sasl else "pass")

    def completeLogin(self, account: str, how: str) -> None:
        """
        Credentials were accepted: log the user in to C{account}.

        @param how: C{"sasl"}, C{"pass"} or C{"register"} (in-band
            registration), which decides what the client is told.
        """
        user = self.user
        if how == "register":
            self.send("REGISTER", "SUCCESS", account, "Account created")
        self.service.login(user, account)
        mask = user.prefix if user.registered else f"{user.nick or '*'}!*@{user.host}"
        self.sendNumeric(
            numerics.RPL_LOGGEDIN, mask, account, f"You are now logged in as {account}"
        )
        if how == "sasl":
            self.sendNumeric(numerics.RPL_SASLSUCCESS, "SASL authentication successful")
        self.checkNickOwner()
        self._tryRegister()

    def _loginFailed(self, failure, sasl: bool) -> None:
        self._authenticating = False
        refused = failure.check(UnauthorizedLogin) is not None
        if not refused:
            # The checker could not check (its store is unreachable): the
            # client is told it failed rather than left waiting.
            self.factory.log.failure("chat login could not be checked", failure)
        if self._closingSince is not None:
            return
        if sasl:
            self.sendNumeric(numerics.ERR_SASLFAIL, "SASL authentication failed")
            self._tryRegister()
        elif refused:
            self.sendNumeric(numerics.ERR_PASSWDMISMATCH, "Password incorrect")
            self.disconnect("Bad password")
        else:
            self.disconnect("Passwords cannot be checked now; try again later")

    # Nick ownership

    def checkNickOwner(self) -> None:
        """
        Start or stop the grace period of a user whose nick belongs to an
        account they have not logged in to.
        """
        user = self.user
        if not user.registered or user.nick is None:
            return
        owner = self.service.directory.account(user.nick)
        if owner is None or (
            user.account is not None and foldCase(user.account) == foldCase(owner.name)
        ):
            self.nickDeadline = None
            return
        if self.nickDeadline is None:
            grace = self.factory.accounts.nickGrace
            self.nickDeadline = self.factory.clock.seconds() + grace
            self.send(
                "NOTICE", user.nick,
                f"The nick {user.nick} belongs to an account: log in (SASL or PASS) or"
                f" you will be renamed in {grace:g} seconds",
            )

    def renameToGuest(self) -> None:
        """
        The grace period is over: rename the user to a free guest nick.
        """
        self.nickDeadline = None
        self.service.setNick(self.user, self.freeGuestNick())

    def freeGuestNick(self) -> str:
        """
        @return: a guest nick nobody has (C{Guest1}, C{Guest2}...).
        """
        for _ in range(100):
            nick = f"Guest{self.factory.nextGuestNumber()}"
            if nick.lower() not in self.service.users:
                break
        return nick

    # In-band registration

    def irc_REGISTER(self, params: tuple[str, ...]) -> None:
        """
        C{REGISTER <account> <email> <password>} (IRCv3
        draft/account-registration): over TLS, when the server allows it,
        create an account and log in to it.
        """
        register = self.factory.accounts.register
        if len(params) < 3:
            raise NeedMoreParams()
        account = self.user.nick if params[0] == "*" else params[0]
        if register is None or not self.user.secure:
            self._registerFailed("DISALLOWED", account or "*", "Registration is not allowed here")
            return
        if not self.user.registered:
            self._registerFailed(
                "COMPLETE_CONNECTION_REQUIRED", account or "*", "Finish connecting first"
            )
            return
        if self.user.account is not None:
            self._registerFailed(
                "ALREADY_AUTHENTICATED", self.user.account, "You are already logged in"
            )
            return
        if self._authenticating:
            return
        self._authenticating = True
        registering = register(account, params[2])

        def done(name: str) -> None:
            self._authenticating = False
            if self._closingSince is not None:
                return
            self.completeLogin(name, "register")

        def failed(failure) -> None:
            self._authenticating = False
            failure.trap(RegistrationRefused)
            if self._closingSince is None:
                self._registerFailed(failure.value.code, account, failure.value.text)

        registering.addCallbacks(done, failed).addErrback(
            lambda failure: self.factory.log.failure("REGISTER failed", failure)
        )

    def _registerFailed(self, code: str, account: str, text: str) -> None:
        from netservices.chat.wire import echoParam

        self.send("FAIL", "REGISTER", code, echoParam(account), text)

    # Operators

    def irc_OPER(self, params: tuple[str, ...]) -> None:
        from netservices.chat.accounts import IChatAccount, SourcedCredentials

        if len(params) < 2:
            raise NeedMoreParams()
        if self.user.oper:
            self.sendNumeric(numerics.RPL_YOUREOPER, "You are now an IRC operator")
            return
        portal = self.factory.accounts.portal
        if portal is None or not self.user.secure:
            self.sendNumeric(numerics.ERR_NOOPERHOST, "OPER needs an account over TLS")
            return
        credentials = SourcedCredentials(params[0], params[1], self.user.host, True)
        login = portal.login(credentials, None, IChatAccount)

        def done(result) -> None:
            avatar = result[1]
            if self._closingSince is not None:
                return
            if not avatar.oper:
                self.sendNumeric(numerics.ERR_NOOPERHOST, "You are not an IRC operator")
                return
            self.becomeOper(avatar.name)

        def failed(failure) -> None:
            failure.trap(UnauthorizedLogin)
            if self._closingSince is None:
                self.sendNumeric(numerics.ERR_PASSWDMISMATCH, "Password incorrect")

        login.addCallbacks(done, failed).addErrback(
            lambda failure: self.factory.log.failure("OPER failed", failure)
        )

    def becomeOper(self, account: str) -> None:
        """
        C{OPER} credentials of an operator account were accepted.
        """
        self.user.oper = True
        self.sendNumeric(numerics.RPL_YOUREOPER, "You are now an IRC operator")
        self.send("MODE", self.user.nick, "+o", source=self.user.nick)
        self.factory.log.info(
            "{nick} ({account}) is now an IRC operator", nick=self.user.nick, account=account,
        )

    def _requireOper(self) -> None:
        if not self.user.oper:
            raise ChatError(
                numerics.ERR_NOPRIVILEGES, "Permission Denied- You're not an IRC operator"
            )

    def irc_KILL(self, params: tuple[str, ...]) -> None:
        self._requireOper()
        if not params or not params[0]:
            raise NeedMoreParams()
        target = self.service.findUser(params[0])
        if target is None:
            raise ChatError(numerics.ERR_NOSUCHNICK, params[0], "No such nick/channel")
        reason = params[1] if len(params) > 1 and params[1] else "no reason"
        self.factory.log.info(
            "{oper} killed {nick}: {reason}", oper=self.user.nick, nick=target.nick, reason=reason
        )
        target.client.disconnect(truncateText(f"Killed ({self.user.nick} ({reason}))", 300))

    def irc_WALLOPS(self, params: tuple[str, ...]) -> None:
        self._requireOper()
        if not params or not params[0]:
            raise NeedMoreParams()
        line = encode(self.user.prefix, "WALLOPS", params[0])
        for user in self.service.allUsers():
            if user.oper or user.wallops:
                user.client.deliver(line)

    def irc_REHASH(self, params: tuple[str, ...]) -> None:
        self._requireOper()
        self.sendNumeric(numerics.RPL_REHASHING, "chat", "Rehashing")
        self.factory.log.info("REHASH by {nick}", nick=self.user.nick)
        self.factory.accounts.rehash()


class NeedMoreParams(Exception):
    """
    A command came without the parameters it needs (461).
    """
