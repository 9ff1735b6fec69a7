"""
Integration tests of the threaded service: the real server under twistd,
over loopback, with the C{netservices threaded} client and the client
library.  Durations are read from the server's own log timestamps, never
asserted on the test's wall clock.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from netservices.testing import (
    CLEAN_STOP,
    TwistdTestCase,
    childEnvironment,
    oneLineFailure,
    runCommand,
    runTwistd,
    startTwistd,
)
from netservices.threaded.client import ask, connect

USER_MODULE = '''
import threading


def shout(*words):
    """Blocking user code: upper-cases its arguments."""
    return " ".join(words).upper() + " from " + threading.current_thread().name


def explode(text):
    raise ValueError("cannot handle " + text)
'''


def isEnd(handler: str):
    """
    @return: a predicate for the log events of requests to C{handler} that
        ended.
    """
    return lambda event: event.get("handler") == handler and "outcome" in event


class ThreadedServiceTests(TwistdTestCase):
    """
    The threaded service under twistd.
    """

    async def test_concurrentSleeps(self) -> None:
        """
        Four concurrent C{sleep 0.4} requests on four threads run at once:
        by the server's own timestamps, all four ran on different threads
        and from the first start to the last end took less than two
        sleeps (one after the other they would take four).
        """
        server = await self.startServer(
            ["threaded", "--port", "0", "--threads", "4", "--queue", "0"], 1
        )
        [(host, port)] = server.addresses
        out, err, code = await runCommand(
            reactor, ["threaded", f"{host}:{port}", "sleep", "0.4", "--concurrency", "4", "--count", "4", "--json"]
        )
        self.assertEqual(code, 0, err)
        self.assertIn('"OK": 4', out.decode())
        ends = server.eventsMatching(isEnd("sleep"))
        self.assertEqual(len(ends), 4)
        self.assertEqual({e["outcome"] for e in ends}, {"OK"})
        self.assertEqual(len({e["thread"] for e in ends}), 4)
        span = max(e["ended"] for e in ends) - min(e["started"] for e in ends)
        self.assertGreaterEqual(span, 0.4)
        self.assertLess(span, 0.8)
        for e in ends:
            self.assertGreaterEqual(e["handler_ms"], 400)

    async def test_userHandler(self) -> None:
        """
        C{--handler NAME=module:function} serves the user's function from a
        module on C{PYTHONPATH}, on a pool thread; its exceptions are
        C{ERROR failed} replies, and the client exits with 1 and one line.
        """
        directory = self.temporaryDirectory()
        (directory / "nsthreadeduser.py").write_text(USER_MODULE)
        env = childEnvironment()
        env["PYTHONPATH"] = os.pathsep.join(
            [str(directory), *filter(None, [env.get("PYTHONPATH")])]
        )
        server = await startTwistd(
            reactor,
            ["threaded", "--port", "0",
             "--handler", "shout=nsthreadeduser:shout",
             "--handler", "explode=nsthreadeduser:explode"],
            1,
            env=env,
        )
        self.addCleanup(self.assertNoErrorsLogged, server)
        self.addCleanup(server.stop)
        [(host, port)] = server.addresses
        target = f"{host}:{port}"
        shouted, exploded = await gatherResults(
            [
                runCommand(reactor, ["threaded", target, "shout", "hello", "world"]),
                runCommand(reactor, ["threaded", target, "explode", "this"]),
            ]
        )
        out, err, code = shouted
        self.assertEqual(code, 0, err)
        self.assertRegex(out.decode(), r"^HELLO WORLD from PoolThread-threaded-\d+\n$")
        oneLineFailure(
            self, exploded, "ERROR failed ValueError: cannot handle this", code=1
        )
        self.assertEqual(
            [e["origin"] for e in server.eventsMatching(lambda e: "origin" in e)],
            ["nsthreadeduser:shout", "nsthreadeduser:explode"],
        )

    async def test_badHandlerPaths(self) -> None:
        """
        Bad C{--handler} values stop twistd with one line and status 1.
        """
        cases = {
            "nosuchmodule_xyz:f": "cannot import nosuchmodule_xyz",
            "x=nosuchmodule_xyz:f": "cannot import nosuchmodule_xyz: ModuleNotFoundError",
            "x=os.path:nosuch": "os.path has no 'nosuch'",
            "echo=os.path:join": "'echo' is a built-in handler",
        }
        results = await gatherResults(
            [runTwistd(reactor, ["threaded", "--handler", spec]) for spec in cases]
        )
        for (spec, message), result in zip(cases.items(), results):
            line = oneLineFailure(self, result, "--handler", code=1)
            self.assertIn(message if "=" in spec else "expected NAME=package.module:function", line)

    async def test_requestsRepliesAndLimits(self) -> None:
        """
        Over one connection: bad requests and an over-long line get ERROR
        replies and the connection survives; with one thread and no queue,
        a request beyond the running one is C{BUSY queue-full}; one that
        outlives C{--request-timeout} is C{TIMEOUT}; C{stats} counts it all.
        The client exits with 1 and one line on ERROR.
        """
        server = await self.startServer(
            ["threaded", "--port", "0", "--threads", "1", "--queue", "0",
             "--request-timeout", "0.3", "--max-line", "200"],
            1,
        )
        [(host, port)] = server.addresses
        stream = await connect(reactor, host, port, 10)
        self.addCleanup(stream.transport.abortConnection)
        stream.transport.write(b"!bad\n" + b"1 echo " + b"x" * 300 + b"\n")
        first = stream.request("nosuch")
        slow = stream.request("sleep", ["1"])
        refused = stream.request("echo", ["x"])
        results = await gatherResults([first, slow, refused])
        replies = [(r.kind, r.reason) for r in results]
        self.assertEqual(
            replies, [("ERROR", "unknown-handler"), ("TIMEOUT", ""), ("BUSY", "queue-full")]
        )
        # The stuck thread returns; then the pool serves again.
        await server.waitForEvent(lambda e: "returned after" in e.get("log_format", ""))
        reply = await ask(reactor, stream, "server", "echo", ["still", "here"], 10)
        self.assertEqual(reply.text, "still here")
        stats = dict(
            word.split("=") for word in (await ask(reactor, stream, "server", "stats", [], 10)).text.split()
        )
        self.assertEqual(
            {k: stats[k] for k in ("threads", "stuck", "completed", "rejected", "timed_out", "finished_late")},
            {"threads": "1", "stuck": "0", "completed": "1", "rejected": "1", "timed_out": "1", "finished_late": "1"},
        )
        refusals = server.eventsMatching(lambda e: "reason" in e and e.get("what") == "request")
        self.assertEqual(
            sorted(e["reason"] for e in refusals),
            ["bad-request", "line-too-long", "queue-full", "unknown-handler"],
        )
        result = await runCommand(reactor, ["threaded", f"{host}:{port}", "sleep", "x"])
        oneLineFailure(self, result, "ERROR bad-arguments", code=1)

    async def test_gracefulStop(self) -> None:
        """
        On SIGTERM the running request finishes and its reply is sent
        before the process exits cleanly.
        """
        server = await self.startServer(["threaded", "--port", "0"], 1)
        [(host, port)] = server.addresses
        stream = await connect(reactor, host, port, 10)
        self.addCleanup(lambda: stream.transport and stream.transport.abortConnection())
        reply = stream.request("sleep", ["0.3"])
        await server.waitForEvent(lambda e: e.get("handler") == "sleep" and "started" in e)
        code = await server.stop()
        self.assertEqual(code, CLEAN_STOP)
        self.assertEqual((await reply).text, "slept 0.3")
        [end] = server.eventsMatching(isEnd("sleep"))
        self.assertEqual(end["outcome"], "OK")
