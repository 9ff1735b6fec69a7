"""
Tests for the C{netservices} twistd plugin and the console command, as
installed: the plugin's packaging, then C{twistd}, C{twist} and
C{netservices} run as child processes.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import socket
import sys
import tempfile
from importlib import import_module
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.plugin import getPlugins
from twisted.trial.unittest import TestCase

import netservices.tap
from netservices.testing import (
    oneLineFailure,
    CLEAN_STOP,
    eventText,
    fetchStream,
    hasTraceback,
    isError,
    parseLogRecord,
    runCommand,
    runProcess,
    runTwistd,
    scriptCommand,
    startTwistd,
)

#: The source tree: this file is tests/test_plugin.py.
PROJECT = Path(__file__).resolve().parent.parent

PLUGIN_FILE = "twisted/plugins/netservices_plugin.py"


def isEditable(distribution: importlib.metadata.Distribution) -> bool:
    """
    @return: whether C{distribution} was installed with C{pip install -e}
        (PEP 610), so that its RECORD lists none of the package's files.
    """
    text = distribution.read_text("direct_url.json")
    if not text:
        return False
    return bool(json.loads(text).get("dir_info", {}).get("editable"))


def installedDistributions() -> list[importlib.metadata.Distribution]:
    """
    @return: the installed C{netservices} distributions, leaving out
        metadata that a build left in the source tree (C{netservices.egg-info}),
        which C{importlib.metadata} also finds when the source tree is on
        C{sys.path}.
    """
    return [
        distribution
        for distribution in importlib.metadata.distributions(name="netservices")
        if Path(distribution.locate_file("")).resolve() != PROJECT
    ]


def forbiddenInitFiles(paths) -> list[str]:
    """
    @return: the C{twisted/__init__.py} and C{twisted/plugins/__init__.py}
        among C{paths}: either would make C{twisted.plugins} (or all of
        C{twisted}) a package of ours, shadowing Twisted's.
    """
    return [
        path
        for path in paths
        if path.endswith(("twisted/plugins/__init__.py", "twisted/__init__.py"))
        and "site-packages/twisted/" not in path
    ]


class PluginPackagingTests(TestCase):
    """
    The plugin is a module of Twisted's C{twisted.plugins} namespace, not a
    package of its own.
    """

    def test_noInitInSourceTree(self) -> None:
        """
        The source tree has C{twisted/plugins/netservices_plugin.py} and no
        C{__init__.py} in C{twisted/} or C{twisted/plugins/}.
        """
        self.assertTrue((PROJECT / PLUGIN_FILE).is_file())
        self.assertFalse((PROJECT / "twisted" / "plugins" / "__init__.py").exists())
        self.assertFalse((PROJECT / "twisted" / "__init__.py").exists())

    def test_installedDistribution(self) -> None:
        """
        The installed distribution's RECORD holds the plugin module and no
        C{twisted/plugins/__init__.py}.  (An editable install's RECORD lists
        no package files at all; L{test_builtPackageFiles} checks what a
        wheel would hold instead.)
        """
        distributions = installedDistributions()
        if not distributions:
            raise self.skipTest("netservices is not installed")
        for distribution in distributions:
            paths = [path.as_posix() for path in distribution.files or []]
            self.assertEqual(forbiddenInitFiles(paths), [])
        editable = [d for d in distributions if isEditable(d)]
        if editable:
            raise self.skipTest(
                "editable install: its RECORD lists no package files;"
                " test_builtPackageFiles checks the built files instead"
            )
        for distribution in distributions:
            paths = [path.as_posix() for path in distribution.files or []]
            self.assertIn(PLUGIN_FILE, paths)

    async def test_builtPackageFiles(self) -> None:
        """
        Building the package from the source tree (setuptools C{build_py},
        the files a wheel gets) yields the plugin module and no
        C{__init__.py} in C{twisted/} or C{twisted/plugins/}.
        """
        try:
            import setuptools  # noqa: F401
        except ImportError:
            raise self.skipTest("setuptools is not installed")
        work = Path(tempfile.mkdtemp(prefix="netservices-build-"))
        self.addCleanup(shutil.rmtree, work, True)
        source = work / "source"
        source.mkdir(parents=True)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")
        for name in ("netservices", "twisted"):
            shutil.copytree(PROJECT / name, source / name, ignore=ignore)
        for name in ("setup.cfg", "setup.py", "pyproject.toml", "README.md"):
            if (PROJECT / name).exists():
                shutil.copy(PROJECT / name, source / name)
        built = work / "built"
        command = [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(built.resolve()),
        ]
        out, err, code = await runProcess(reactor, command, path=str(source.resolve()))
        self.assertEqual(code, 0, err)
        paths = [p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file()]
        self.assertIn(PLUGIN_FILE, paths)
        self.assertIn("netservices/tap.py", paths)
        self.assertEqual(forbiddenInitFiles(paths), [])
        self.assertEqual(
            sorted(p for p in paths if p.startswith("twisted/")), [PLUGIN_FILE]
        )

    def test_getPluginsFindsTapname(self) -> None:
        """
        C{getPlugins(IServiceMaker)} finds the C{netservices} service maker,
        whose options are L{netservices.tap.Options}.
        """
        import twisted.plugins

        makers = [
            maker
            for maker in getPlugins(IServiceMaker, twisted.plugins)
            if maker.tapname == "netservices"
        ]
        self.assertTrue(makers, "no IServiceMaker with tapname 'netservices'")
        for maker in makers:
            self.assertIs(maker.options, netservices.tap.Options)


def commandNames(helpText: str) -> set[str]:
    """
    @return: the sub-command names of the C{Commands:} section of a
        C{usage.Options} help text.
    """
    lines = helpText.splitlines()
    start = lines.index("Commands:") + 1
    names = set()
    for line in lines[start:]:
        if not line.strip():
            break
        # Continuation lines of a long description are indented further.
        if line.startswith("    ") and not line[4].isspace():
            names.add(line.split()[0])
    return names


def optionsOf(name: str):
    """
    @return: a new instance of the options class of service C{name}.
    """
    for service, module, options, _, _ in netservices.tap.SERVICES:
        if service == name:
            return getattr(import_module(module), options)()
    raise KeyError(name)


class TwistdHelpTests(TestCase):
    """
    C{twistd} lists the plugin, and every sub-command documents its options.
    """

    async def test_twistdListsPlugin(self) -> None:
        """
        C{twistd --help} lists C{netservices} among the plugins.
        """
        command = scriptCommand("twistd")
        out, err, code = await runProcess(reactor, [*command, "--help"])
        self.assertEqual(code, 0, err)
        self.assertRegex(out.decode(), r"(?m)^\s+netservices\s+Network services")

    async def test_subCommands(self) -> None:
        """
        C{twistd -n netservices --help} lists exactly the sub-commands of
        L{netservices.tap.SERVICES}.
        """
        out, err, code = await runTwistd(reactor, ["--help"])
        self.assertEqual(code, 0, err)
        self.assertEqual(
            commandNames(out.decode()), {name for name, *_ in netservices.tap.SERVICES}
        )

    async def test_subCommandHelp(self) -> None:
        """
        C{twistd -n netservices SUB --help} exits with 0 for each
        sub-command and mentions every long option of its options class.
        """
        names = [name for name, *_ in netservices.tap.SERVICES]
        results = await gatherResults(
            [runTwistd(reactor, [name, "--help"]) for name in names], consumeErrors=True
        )
        for name, (out, err, code) in zip(names, results):
            self.assertEqual(code, 0, f"{name}: {err!r}")
            text = out.decode()
            for option in optionsOf(name).longOpt:
                self.assertIn(f"--{option.rstrip('=')}", text, f"{name} --help")


class BadInputTests(TestCase):
    """
    Bad command lines and startup failures end C{twistd} with status 1 and
    one line saying why, never a traceback.
    """

    async def assertOneLineError(self, args: list[str], *mentions: str) -> str:
        """
        Run C{twistd -n netservices ARGS} and check that it exits with 1,
        prints one line on stderr (containing each of C{mentions}), nothing
        on stdout, and no traceback.

        @return: the line.
        """
        result = await runTwistd(reactor, args)
        return oneLineFailure(self, result, *mentions, code=1)

    async def test_unknownSubCommand(self) -> None:
        """
        An unknown sub-command is named.
        """
        await self.assertOneLineError(["bogus"], "bogus")

    async def test_missingSubCommand(self) -> None:
        """
        Without a sub-command, the services to choose from are listed.
        """
        await self.assertOneLineError([], *[name for name, *_ in netservices.tap.SERVICES])

    async def test_portNotANumber(self) -> None:
        """
        C{--port notanumber} is refused.
        """
        await self.assertOneLineError(
            ["tcp-info", "--port", "notanumber"], "--port", "notanumber"
        )

    async def test_portTooLarge(self) -> None:
        """
        C{--port 70000} is refused.
        """
        await self.assertOneLineError(["tcp-info", "--port", "70000"], "--port", "70000")

    async def test_unknownEndpointType(self) -> None:
        """
        C{--listen bogus:1} is refused.
        """
        await self.assertOneLineError(["tcp-info", "--listen", "bogus:1"], "bogus:1")

    async def test_unescapedInterface(self) -> None:
        """
        C{--listen tcp:0:interface=::1} (colons not escaped) is refused, with
        a hint about escaping.
        """
        await self.assertOneLineError(
            ["tcp-info", "--listen", "tcp:0:interface=::1"], "interface=::1", "escape"
        )

    async def test_missingPrivateKey(self) -> None:
        """
        C{--listen ssl:0:privateKey=/nonexistent.pem} names the missing file.
        """
        await self.assertOneLineError(
            ["tcp-info", "--listen", "ssl:0:privateKey=/nonexistent.pem"], "/nonexistent.pem"
        )

    async def test_negativeMaxConnections(self) -> None:
        """
        C{--max-connections -1} is refused.
        """
        await self.assertOneLineError(["tcp-info", "--max-connections", "-1"], "-1")

    async def test_unknownFormat(self) -> None:
        """
        C{tcp-info --format xml} is refused.
        """
        await self.assertOneLineError(["tcp-info", "--format", "xml"], "xml")

    async def test_streamListenForUDP(self) -> None:
        """
        C{udp-info --listen tcp:0} is refused.
        """
        await self.assertOneLineError(["udp-info", "--listen", "tcp:0"], "tcp:0")

    async def assertPortInUse(
        self, service: str, kind: int, extra: tuple[str, ...] = (), host: str = "127.0.0.1"
    ) -> None:
        """
        Start C{service} on a port that a socket of ours holds, and check
        that it exits with 1 after one message (on stderr or, as C{twistd}
        logs stderr, in its log) naming the port and the reason, without a
        traceback.
        """
        holder = socket.socket(socket.AF_INET, kind)
        self.addCleanup(holder.close)
        holder.bind((host, 0))
        if kind == socket.SOCK_STREAM:
            holder.listen(1)
        port = holder.getsockname()[1]
        out, err, code = await runTwistd(reactor, [service, "--port", str(port), *extra])
        self.assertNotIn(b"Traceback", out + err)
        self.assertEqual(code, 1, (out, err))
        events = [parseLogRecord(line) for line in out.splitlines()]
        self.assertNotIn(None, events, out)
        self.assertEqual([eventText(e) for e in events if hasTraceback(e)], [])
        messages = err.decode().splitlines() + [eventText(e) for e in events]
        relevant = [m for m in messages if "Address already in use" in m]
        self.assertEqual(len(relevant), 1, messages)
        self.assertIn(str(port), relevant[0])
        self.assertNotIn("\n", relevant[0])

    async def test_tcpPortInUse(self) -> None:
        """
        tcp-info on a TCP port in use exits with 1 and one line naming the
        port and "Address already in use".
        """
        await self.assertPortInUse("tcp-info", socket.SOCK_STREAM)

    async def test_udpPortInUse(self) -> None:
        """
        udp-info on a UDP port in use exits with 1 and one line naming the
        port and "Address already in use".
        """
        await self.assertPortInUse("udp-info", socket.SOCK_DGRAM)

    async def test_broadcastPortInUse(self) -> None:
        """
        The broadcast server on a UDP port in use exits with 1 and one line
        naming the port and "Address already in use".
        """
        await self.assertPortInUse(
            "broadcast", socket.SOCK_DGRAM, ("--interface", "lo"), host="0.0.0.0"
        )


class TwistTests(TestCase):
    """
    The plugin also runs under C{twist}.
    """

    async def test_twistRunsTCPInfo(self) -> None:
        """
        C{twist netservices tcp-info --port 0} logs where it listens,
        answers a connection, and stops cleanly on SIGTERM.
        """
        server = await startTwistd(reactor, ["tcp-info", "--port", "0"], 1, runner="twist")
        self.addCleanup(server.stop)
        host, port = server.addresses[0]
        self.assertEqual(host, "127.0.0.1")
        answer = await fetchStream(reactor, host, port)
        self.assertEqual(
            answer.data.decode(),
            f"transport=tcp ip=127.0.0.1 port={answer.port} local_ip=127.0.0.1"
            f" local_port={port} tls=no proxy=no\n",
        )
        self.assertEqual(await server.stop(), CLEAN_STOP)
        self.assertTrue(
            server.eventsMatching(lambda e: e.get("log_format") == "Main loop terminated.")
        )
        self.assertEqual([eventText(e) for e in server.eventsMatching(isError)], [])
        self.assertEqual(server.stderr, b"")


class ConsoleCommandTests(TestCase):
    """
    The C{netservices} console command answers bad input and failures with
    one line and a non-zero status.
    """

    def assertOneLine(self, result, code: int | None, *mentions: str) -> None:
        """
        Check that a command printed one line on stderr, containing each of
        C{mentions}, nothing on stdout and no traceback, and exited with
        C{code} (any non-zero status if L{None}).
        """
        out, err, status = result
        self.assertNotIn(b"Traceback", out + err)
        if code is None:
            self.assertNotEqual(status, 0, (out, err))
        else:
            self.assertEqual(status, code, (out, err))
        self.assertEqual(out, b"")
        lines = err.decode().splitlines()
        self.assertEqual(len(lines), 1, err)
        for text in mentions:
            self.assertIn(text, lines[0])

    async def test_help(self) -> None:
        """
        C{netservices --help} exits with 0 and lists the C{info} command.
        """
        out, err, code = await runCommand(reactor, ["--help"])
        self.assertEqual(code, 0, err)
        self.assertIn(b"info", out)

    async def test_failures(self) -> None:
        """
        C{netservices info tcp} without a host exits with 2, an unanswered
        C{info udp} with non-zero, a refused C{info tcp} with 1; one line
        each.
        """
        missing, udp, refused = await gatherResults(
            [
                runCommand(reactor, ["info", "tcp"]),
                runCommand(
                    reactor,
                    ["info", "udp", "127.0.0.1:1", "--timeout", "0.5", "--retries", "0"],
                ),
                runCommand(reactor, ["info", "tcp", "127.0.0.1:1"]),
            ],
            consumeErrors=True,
        )
        self.assertOneLine(missing, 2, "netservices info tcp")
        self.assertOneLine(udp, None, "127.0.0.1:1")
        self.assertOneLine(refused, 1, "127.0.0.1:1", "refused")
