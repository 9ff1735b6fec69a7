# -*- test-case-name: tests.threaded.test_handlers -*-
"""
Handlers: the built-in ones, and loading the user's.

A handler is a blocking Python callable that takes the request's arguments
as strings and returns its result (text; other values are converted with
C{str}, bytes decoded as UTF-8, L{None} is empty).  It runs on a pool
thread.  To refuse its arguments it raises
L{netservices.threaded.pool.HandlerError} (answered C{ERROR
bad-arguments}); any other exception is answered C{ERROR failed}.

Built-ins:

 - C{echo [ARG ...]}: the arguments, joined by spaces.
 - C{sleep SECONDS}: sleeps (0 to L{MAX_SLEEP} seconds), a stand-in for
   blocking work.
 - C{sha256 TEXT [REPEAT]}: the hex SHA-256 of TEXT's UTF-8, repeated
   REPEAT times (at most L{MAX_HASHED} bytes in all); hashlib releases the
   GIL on large inputs, so several run in parallel.
 - C{resolve NAME}: the addresses of NAME through the system resolver
   (C{getaddrinfo}, a real blocking call).
 - C{stats [reset]}: the pool's statistics as C{key=value} words; it runs
   in the reactor thread (it only reads counters), so it answers even when
   every thread is busy.  C{reset} starts a new window for the lag figures.

C{--handler NAME=package.module:function} adds the user's (L{loadHandler}).
"""

from __future__ import annotations

import hashlib
import inspect
import socket
import time
from importlib import import_module
from typing import Callable

import attrs

from netservices.threaded.pool import HandlerError
from netservices.threaded.wire import isValidName

#: The longest C{sleep}, in seconds.
MAX_SLEEP = 60.0

#: The most bytes C{sha256} hashes for one request.
MAX_HASHED = 1 << 30


@attrs.frozen
class Handler:
    """
    A named handler.

    @ivar function: the callable.
    @ivar inline: run in the reactor thread (only for non-blocking
        built-ins such as C{stats}).
    @ivar origin: where it comes from: C{"built-in"} or
        C{"package.module:function"}.
    """

    name: str
    function: Callable[..., object]
    inline: bool = False
    origin: str = "built-in"

    def checkArguments(self, args) -> str | None:
        """
        @return: why the function cannot take C{args}, or L{None} if it can
            (or its signature cannot be known).
        """
        try:
            signature = inspect.signature(self.function)
        except (TypeError, ValueError):
            return None
        try:
            signature.bind(*args)
        except TypeError as e:
            return f"{usageOf(self.name, signature)}: {e}"
        return None


def usageOf(name: str, signature: inspect.Signature) -> str:
    """
    @return: how to call a handler, as C{"sha256 TEXT [REPEAT]"}.
    """
    words = [name]
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            words.append(f"[{parameter.name.upper()} ...]")
        elif parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            optional = parameter.default is not parameter.empty
            words.append(f"[{parameter.name.upper()}]" if optional else parameter.name.upper())
    return " ".join(words)


def echo(*args: str) -> str:
    """
    @return: the arguments, joined by spaces.
    """
    return " ".join(args)


def sleep(seconds: str) -> str:
    """
    Sleep for C{seconds} (0 to L{MAX_SLEEP}).
    """
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_SLEEP:
        raise HandlerError(f"sleep SECONDS: 0 to {MAX_SLEEP:g}, not {seconds[:32]!r}")
    time.sleep(value)
    return f"slept {value:g}"


def sha256(text: str, repeat: str = "1") -> str:
    """
    @return: the hex SHA-256 of C{text}'s UTF-8 repeated C{repeat} times.
    """
    data = text.encode("utf-8")
    if not (repeat.isascii() and repeat.isdigit()) or int(repeat) < 1:
        raise HandlerError(f"sha256 TEXT [REPEAT]: REPEAT is a whole number of at least 1, not {repeat[:32]!r}")
    count = int(repeat)
    if len(data) * count > MAX_HASHED:
        raise HandlerError(f"sha256: at most {MAX_HASHED:,} bytes in all")
    digest = hashlib.sha256()
    if data:
        # Blocks of about 1 MiB: hashlib releases the GIL while it works.
        per = min(count, max(1, (1 << 20) // len(data)))
        block = data * per
        full, left = divmod(count, per)
        for _ in range(full):
            digest.update(block)
        digest.update(data * left)
    return digest.hexdigest()


def resolve(name: str) -> str:
    """
    @return: the addresses of C{name} from the system resolver, in its
        order, without repeats, separated by spaces.
    """
    if not name or len(name) > 253:
        raise HandlerError("resolve NAME: a host name of 1-253 characters")
    try:
        infos = socket.getaddrinfo(name, None, 0, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise HandlerError(f"cannot resolve {name}: {e.strerror}")
    addresses = []
    for *_, sockaddr in infos:
        if sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    return " ".join(addresses)


def statsHandler(pool) -> Callable[..., str]:
    """
    @param pool: a L{netservices.threaded.pool.BoundedPool}.
    @return: the C{stats [reset]} handler of C{pool}.
    """

    def stats(*args: str) -> str:
        if args not in ((), ("reset",)):
            raise HandlerError("stats [reset]")
        words = " ".join(f"{key}={value}" for key, value in pool.statistics().items())
        if args:
            pool.lag.reset()
        return words

    return stats


def builtinHandlers(pool) -> dict[str, Handler]:
    """
    @return: the built-in handlers, by name, C{stats} reporting on C{pool}.
    """
    return {
        "echo": Handler("echo", echo),
        "sleep": Handler("sleep", sleep),
        "sha256": Handler("sha256", sha256),
        "resolve": Handler("resolve", resolve),
        "stats": Handler("stats", statsHandler(pool), inline=True),
    }


#: Names the user cannot take.
BUILTIN_NAMES = frozenset(["echo", "sleep", "sha256", "resolve", "stats"])


def loadHandler(spec: str) -> Handler:
    """
    Load a handler from C{NAME=package.module:function}.

    @raise ValueError: with a one-line message for the user.
    """
    name, equals, path = spec.partition("=")
    module, colon, attribute = path.partition(":")
    if not (equals and colon and name and module and attribute):
        raise ValueError(f"{spec!r}: expected NAME=package.module:function")
    if not isValidName(name):
        raise ValueError(
            f"{name!r} is not a handler name: a letter or _, then up to 63 of"
            " A-Z a-z 0-9 _ . -"
        )
    if name in BUILTIN_NAMES:
        raise ValueError(f"{name!r} is a built-in handler; choose another name")
    try:
        loaded = import_module(module)
    except Exception as e:
        detail = " ".join(str(e).split())
        raise ValueError(f"cannot import {module}: {type(e).__name__}: {detail}")
    function = loaded
    for part in attribute.split("."):
        try:
            function = getattr(function, part)
        except AttributeError:
            raise ValueError(f"{module} has no {attribute!r}")
    if not callable(function):
        raise ValueError(f"{module}:{attribute} is not callable")
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        raise ValueError(
            f"{module}:{attribute} is async; handlers are blocking functions"
        )
    return Handler(name, function, origin=path)
