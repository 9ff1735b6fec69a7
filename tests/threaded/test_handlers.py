"""
Tests for L{netservices.threaded.handlers}.
"""

from __future__ import annotations

import hashlib
import socket
import sys
import tempfile
import shutil
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from netservices.threaded import handlers
from netservices.threaded.handlers import (
    MAX_SLEEP,
    Handler,
    builtinHandlers,
    echo,
    loadHandler,
    resolve,
    sha256,
    sleep,
    statsHandler,
)
from netservices.threaded.pool import HandlerError, LagMonitor

USER_MODULE = '''
import asyncio

def shout(text):
    return text.upper()

class Thing:
    @staticmethod
    def method(a, b="2"):
        return a + b

notCallable = 42

async def later():
    return 1
'''


class BuiltinTests(SynchronousTestCase):
    """
    The built-in handlers.
    """

    def test_echo(self) -> None:
        """
        C{echo} joins its arguments with spaces.
        """
        self.assertEqual(echo("a", "b c"), "a b c")
        self.assertEqual(echo(), "")

    def test_sleep(self) -> None:
        """
        C{sleep} sleeps (0 here) and refuses what is not a number of
        seconds from 0 to L{MAX_SLEEP}.
        """
        self.assertEqual(sleep("0"), "slept 0")
        for bad in ["-1", "x", "nan", "inf", str(MAX_SLEEP + 1), ""]:
            self.assertRaises(HandlerError, sleep, bad)

    def test_sleepSleeps(self) -> None:
        """
        C{sleep} calls C{time.sleep} with the number given.
        """
        slept = []
        self.patch(handlers.time, "sleep", slept.append)
        self.assertEqual(sleep("2.5"), "slept 2.5")
        self.assertEqual(slept, [2.5])

    def test_sha256(self) -> None:
        """
        C{sha256 TEXT [REPEAT]} is the SHA-256 of TEXT's UTF-8 repeated,
        computed in blocks, and refuses bad or too large repeats.
        """
        self.assertEqual(sha256("abc"), hashlib.sha256(b"abc").hexdigest())
        self.assertEqual(sha256("\u00e9", "3"), hashlib.sha256("\u00e9\u00e9\u00e9".encode()).hexdigest())
        self.assertEqual(
            sha256("x" * 1000, "2500"), hashlib.sha256(b"x" * 2_500_000).hexdigest()
        )
        self.assertEqual(sha256("", "5"), hashlib.sha256(b"").hexdigest())
        for bad in ["0", "-1", "x", "1.5"]:
            self.assertRaises(HandlerError, sha256, "a", bad)
        self.assertRaises(HandlerError, sha256, "ab", str(1 << 30))

    def test_resolve(self) -> None:
        """
        C{resolve} lists the resolver's addresses once each, in its order.
        """
        answers = [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 0)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", 0, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 0)),
        ]
        self.patch(handlers.socket, "getaddrinfo", lambda *a: answers)
        self.assertEqual(resolve("example.test"), "192.0.2.1 2001:db8::1")

    def test_resolveFailure(self) -> None:
        """
        A name that does not resolve, or is not a name, is refused with the
        resolver's reason.
        """

        def fail(*a):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        self.patch(handlers.socket, "getaddrinfo", fail)
        with self.assertRaises(HandlerError) as caught:
            resolve("nowhere.test")
        self.assertEqual(str(caught.exception), "cannot resolve nowhere.test: Name or service not known")
        self.assertRaises(HandlerError, resolve, "")
        self.assertRaises(HandlerError, resolve, "a" * 254)

    def test_resolveLocalhost(self) -> None:
        """
        The real resolver answers for C{localhost}.
        """
        self.assertIn("127.0.0.1", resolve("localhost").split())

    def test_stats(self) -> None:
        """
        C{stats} gives the pool's statistics as C{key=value} words;
        C{stats reset} also starts a new lag window; other arguments are
        refused.
        """

        class FakePool:
            lag = LagMonitor(None)

            def statistics(self):
                return {"threads": 2, "busy": 1}

        pool = FakePool()
        pool.lag.samples.append(0.5)
        stats = statsHandler(pool)
        self.assertEqual(stats(), "threads=2 busy=1")
        self.assertEqual(len(pool.lag.samples), 1)
        self.assertEqual(stats("reset"), "threads=2 busy=1")
        self.assertEqual(len(pool.lag.samples), 0)
        self.assertRaises(HandlerError, stats, "x")

    def test_builtins(self) -> None:
        """
        The five built-ins are there; only C{stats} runs inline.
        """
        table = builtinHandlers(None)
        self.assertEqual(sorted(table), ["echo", "resolve", "sha256", "sleep", "stats"])
        self.assertEqual([n for n, h in table.items() if h.inline], ["stats"])

    def test_checkArguments(self) -> None:
        """
        L{Handler.checkArguments} says why arguments do not fit the
        signature, and lets anything through when it has none.
        """
        handler = Handler("sleep", sleep)
        self.assertIsNone(handler.checkArguments(("1",)))
        self.assertEqual(
            handler.checkArguments(("1", "2")), "sleep SECONDS: too many positional arguments"
        )
        self.assertEqual(
            Handler("sha256", sha256).checkArguments(()),
            "sha256 TEXT [REPEAT]: missing a required argument: 'text'",
        )
        self.assertIsNotNone(handler.checkArguments(()))
        self.assertIsNone(Handler("echo", echo).checkArguments(("a",) * 10))
        # max has no signature that inspect can read: nothing is checked.
        self.assertIsNone(Handler("max", max).checkArguments(()))


class LoadHandlerTests(SynchronousTestCase):
    """
    L{loadHandler} loads C{NAME=package.module:function}, or says in one
    line why it cannot.
    """

    def setUp(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="netservices-test-"))
        self.addCleanup(shutil.rmtree, directory, True)
        (directory / "nsuserhandlers.py").write_text(USER_MODULE)
        (directory / "nsbroken.py").write_text("raise RuntimeError('broken\\nmodule')\n")
        sys.path.insert(0, str(directory))
        self.addCleanup(sys.path.remove, str(directory))
        for name in ("nsuserhandlers", "nsbroken"):
            self.addCleanup(sys.modules.pop, name, None)

    def test_load(self) -> None:
        """
        A function, or an attribute path inside the module, is loaded under
        the name given.
        """
        handler = loadHandler("shout=nsuserhandlers:shout")
        self.assertEqual((handler.name, handler.origin), ("shout", "nsuserhandlers:shout"))
        self.assertEqual(handler.function("hi"), "HI")
        self.assertFalse(handler.inline)
        method = loadHandler("m=nsuserhandlers:Thing.method")
        self.assertEqual(method.function("1"), "12")

    def test_errors(self) -> None:
        """
        Each way of getting it wrong has its own message.
        """
        cases = {
            "shout": "expected NAME=package.module:function",
            "shout=nsuserhandlers": "expected NAME=package.module:function",
            "=nsuserhandlers:shout": "expected NAME=package.module:function",
            "9x=nsuserhandlers:shout": "is not a handler name",
            "echo=nsuserhandlers:shout": "'echo' is a built-in handler",
            "x=nosuchmodule.at.all:f": "cannot import nosuchmodule.at.all: ModuleNotFoundError",
            "x=nsbroken:f": "cannot import nsbroken: RuntimeError: broken module",
            "x=nsuserhandlers:missing": "nsuserhandlers has no 'missing'",
            "x=nsuserhandlers:notCallable": "nsuserhandlers:notCallable is not callable",
            "x=nsuserhandlers:later": "is async; handlers are blocking functions",
        }
        for spec, message in cases.items():
            with self.assertRaises(ValueError, msg=spec) as caught:
                loadHandler(spec)
            self.assertIn(message, str(caught.exception), spec)
            self.assertNotIn("\n", str(caught.exception), spec)
