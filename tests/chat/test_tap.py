"""
Tests for L{netservices.chat.tap}: options, the state directory and the
service tree, without sockets.
"""

import os
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netservices._common.listen import StreamListener
from netservices.chat.tap import ChatOptions, defaultDataDirectory, makeService


def parse(*argv: str) -> ChatOptions:
    """
    @return: chat options parsed from C{argv} with a memory reactor.
    """
    options = ChatOptions()
    options.reactor = MemoryReactorClock()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    """
    C{twistd netservices chat} options.
    """

    def test_zeroConfiguration(self) -> None:
        """
        Without --listen or --port: plaintext on 127.0.0.1:6667 (the TLS
        listener is added by makeService), documented limits.
        """
        options = parse()
        self.assertTrue(options.zeroConfiguration)
        self.assertEqual(options["listen"], ["tcp:6667:interface=127.0.0.1"])
        settings = options.connectionSettings()
        self.assertEqual(
            (settings.registrationTimeout, settings.pingInterval, settings.pongTimeout),
            (30.0, 120.0, 20.0),
        )
        self.assertEqual((settings.recvq, settings.sendq), (8192, 262144))
        self.assertEqual((settings.floodBurst, settings.floodRate), (10, 2.0))
        self.assertEqual(options["data-dir"], str(defaultDataDirectory()))

    def test_listenReplacesDefaults(self) -> None:
        """
        --port and --listen replace both default listeners.
        """
        options = parse("--port", "7000", "--listen", "tcp:7001")
        self.assertFalse(options.zeroConfiguration)
        self.assertEqual(options["listen"], ["tcp:7000:interface=127.0.0.1", "tcp:7001"])

    def test_badValues(self) -> None:
        """
        Bad numbers, server names and MOTD files are usage errors.
        """
        for argv in (
            ["--flood-rate", "-1"],
            ["--sendq", "0"],
            ["--server-name", "a b"],
            ["--server-name", "x!y"],
            ["--motd-file", "/nonexistent/motd"],
        ):
            self.assertRaises(usage.UsageError, parse, *argv)

    def test_cluster(self) -> None:
        """
        --cluster takes a redis:// URL (port and database defaulting to 6379
        and 0) and needs --node-name.
        """
        from netservices.chat.redislog import RedisAddress

        options = parse("--cluster", "redis://127.0.0.1:7000/2", "--node-name", "n1")
        self.assertEqual(options["cluster"], RedisAddress("127.0.0.1", 7000, 2))
        self.assertEqual(str(options["cluster"]), "redis://127.0.0.1:7000/2")
        self.assertEqual(
            parse("--cluster", "redis://[::1]", "--node-name", "a.b_c-1")["cluster"],
            RedisAddress("::1", 6379, 0),
        )
        self.assertIsNone(parse()["cluster"])

    def test_badCluster(self) -> None:
        """
        A URL that is not redis://HOST[:PORT][/DB], a missing or bad node
        name, or a node name without a cluster are usage errors that say
        what is wrong.
        """
        for argv, message in [
            (["--cluster", "http://h:1/0", "--node-name", "n"], "not a redis:// URL"),
            (["--cluster", "redis://h:99999/0", "--node-name", "n"], "bad port"),
            (["--cluster", "redis://h:0/0", "--node-name", "n"], "bad port"),
            (["--cluster", "redis://h:1/x", "--node-name", "n"], "must be a number"),
            (["--cluster", "redis://u:p@h:1/0", "--node-name", "n"], "only redis://HOST:PORT/DB"),
            (["--cluster", "redis:///0", "--node-name", "n"], "no host"),
            (["--cluster", "redis://h:1/0"], "--cluster needs --node-name"),
            (["--node-name", "n"], "--node-name needs --cluster"),
            (["--cluster", "redis://h:1/0", "--node-name", "a b"], "--node-name: 1 to 32"),
            (["--cluster", "redis://h:1/0", "--node-name", "x" * 33], "--node-name: 1 to 32"),
        ]:
            error = self.assertRaises(usage.UsageError, parse, *argv)
            self.assertIn(message, str(error), argv)

    def test_defaultDataDirectory(self) -> None:
        """
        Root keeps state in /var/lib; others under XDG_STATE_HOME.
        """
        self.patch(os, "geteuid", lambda: 0)
        self.assertEqual(defaultDataDirectory(), Path("/var/lib/netservices/chat"))
        self.patch(os, "geteuid", lambda: 1000)
        self.patch(os, "environ", {"XDG_STATE_HOME": "/x/state"})
        self.assertEqual(defaultDataDirectory(), Path("/x/state/netservices/chat"))


class MakeServiceTests(SynchronousTestCase):
    """
    The service tree.
    """

    def test_zeroConfiguration(self) -> None:
        """
        With no listen options the state directory gets a certificate and
        there are two listeners, the second TLS on 6697.
        """
        directory = Path(self.mktemp())
        options = parse("--data-dir", str(directory))
        top = makeService(options, options.reactor)
        listeners = [s for s in top if isinstance(s, StreamListener)]
        self.assertEqual(len(listeners), 2)
        self.assertTrue(listeners[1].description.startswith("ssl:6697 with "))
        self.assertTrue((directory / "tls-cert.pem").is_file())
        self.assertEqual((directory / "tls-key.pem").stat().st_mode & 0o777, 0o600)
        self.assertEqual(directory.stat().st_mode & 0o777, 0o700)

    def test_cluster(self) -> None:
        """
        With --cluster the connections are cluster connections and the tree
        has the Redis log of this node.
        """
        from netservices.chat.cluster import ClusterFactory
        from netservices.chat.redislog import RedisLog

        options = parse(
            "--data-dir", self.mktemp(), "--port", "0",
            "--cluster", "redis://127.0.0.1:7000/0", "--node-name", "n1",
        )
        top = makeService(options, options.reactor)
        self.assertIsInstance(top.factory, ClusterFactory)
        [log] = [s for s in top if isinstance(s, RedisLog)]
        self.assertIs(log.replica, top.factory.replica)
        self.assertEqual(log.replica.nodeName, "n1")
        from netservices._common.metrics import metricsOf

        metrics = metricsOf(options)
        log.counts.update(appended=3, applied=5, outages=1)
        log.replica.nodes.update(n1="x", n2="y")
        self.assertEqual(metrics.values("chat_cluster_entries"), {("appended",): 3, ("applied",): 5})
        self.assertEqual(metrics.values("chat_cluster_outages"), {(): 1})
        self.assertEqual(metrics.values("chat_cluster_nodes"), {(): 2})

    def test_motdFromDataDirectory(self) -> None:
        """
        motd.txt in the state directory is the message of the day.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "motd.txt").write_bytes(b"Hi there\n\nbad \xff byte\n")
        options = parse("--data-dir", str(directory), "--port", "0")
        top = makeService(options, options.reactor)
        self.assertEqual(top.factory.info.motd, ("Hi there", " ", "bad \ufffd byte"))
        self.assertEqual(len([s for s in top if isinstance(s, StreamListener)]), 1)
        self.assertFalse((directory / "tls-cert.pem").exists())

    def test_history(self) -> None:
        """
        --history sets how many messages each channel keeps (100 by
        default, 0 for none); more than 1000 or less than 0 is refused.
        """
        for argv, kept in ([(), 100], [("--history", "5"), 5], [("--history", "0"), 0],
                           [("--history", "1000"), 1000]):
            options = parse("--data-dir", self.mktemp(), "--port", "0", *argv)
            top = makeService(options, options.reactor)
            self.assertEqual(top.factory.service.limits.history, kept, argv)
        self.assertRaises(usage.UsageError, parse, "--history", "-1")
        self.assertRaises(usage.UsageError, parse, "--history", "1001")

    def test_unusableDataDirectory(self) -> None:
        """
        A state directory that cannot be made is a one-line exit.
        """
        blocker = Path(self.mktemp())
        blocker.write_text("a file")
        options = parse("--data-dir", str(blocker / "state"), "--port", "0")
        error = self.assertRaises(SystemExit, makeService, options, options.reactor)
        self.assertIn("cannot use state directory", str(error))
        self.assertNotIn("\n", str(error))


class ReloadTests(SynchronousTestCase):
    """
    SIGHUP (the service's C{reload}) reads the MOTD again.
    """

    def test_reloadMotd(self) -> None:
        """
        A changed motd.txt is served after a reload; a --motd-file that
        became unreadable leaves the MOTD as it was.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        options = parse("--data-dir", str(directory), "--port", "0")
        top = makeService(options, options.reactor)
        self.assertIsNone(top.factory.info.motd)
        (directory / "motd.txt").write_text("new\n")
        top.reload()
        self.assertEqual(top.factory.info.motd, ("new",))

        motd = directory / "other.txt"
        motd.write_text("first\n")
        options = parse("--data-dir", str(directory), "--port", "0", "--motd-file", str(motd))
        top = makeService(options, options.reactor)
        motd.unlink()
        top.reload()
        self.assertEqual(top.factory.info.motd, ("first",))

    def test_reloadCertificate(self) -> None:
        """
        A reload reads the zero-configuration certificate again: a renewed
        one is served to new connections; an unusable one is refused and
        the old one kept.
        """
        from netservices._common.tls import createSelfSignedCertificate
        from netservices._common.listen import StreamListener

        directory = Path(self.mktemp())
        options = parse("--data-dir", str(directory))
        top = makeService(options, options.reactor)
        [_, secure] = [s for s in top if isinstance(s, StreamListener)]
        before = secure.endpoint._sslContextFactory.certificate.fingerprint
        createSelfSignedCertificate(directory / "tls-key.pem", directory / "tls-cert.pem")
        top.reload()
        renewed = secure.endpoint._sslContextFactory.certificate.fingerprint
        self.assertNotEqual(renewed, before)
        self.assertIsNotNone(secure.endpoint._sslContextFactory.getContext())
        (directory / "tls-cert.pem").write_text("garbage")
        top.reload()
        self.assertEqual(secure.endpoint._sslContextFactory.certificate.fingerprint, renewed)
