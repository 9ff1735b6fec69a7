"""
Tests for L{netservices._common.systemd}, and for socket activation and
readiness end to end: twistd started the way systemd starts it, with a
listening socket as descriptor 3 (C{LISTEN_FDS}, C{LISTEN_PID},
C{LISTEN_FDNAMES}) and a C{NOTIFY_SOCKET} the test listens on.
"""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from netservices._common.systemd import notify, notifyAddress
from netservices.testing import (
    CLEAN_STOP,
    TwistdTestCase,
    childEnvironment,
    eventText,
    fetchStream,
    runProcess,
    scriptCommand,
    startTwistd,
)
from tests._common.test_metrics import EchoOnce

#: What systemd does before it starts a socket-activated service, as a
#: command that runs the rest of its arguments: a listening TCP socket on
#: 127.0.0.1 (any port) as descriptor 3, and the variables naming it, with
#: LISTEN_PID set to the PID the service will have (exec keeps it).
ACTIVATE = r"""
import os, socket, sys
family = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
listener = socket.socket(family, socket.SOCK_STREAM)
listener.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
listener.listen(50)
if listener.fileno() == 3:
    os.set_inheritable(listener.detach(), True)
else:
    os.dup2(listener.fileno(), 3)
    listener.close()
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="service")
os.execv(sys.argv[2], sys.argv[2:])
"""


def activation(family: str = "4") -> list[str]:
    """
    @return: the prefix that starts a command socket-activated (see
        L{ACTIVATE}).
    """
    return [sys.executable, "-c", ACTIVATE, family]


class NotifyListener(DatagramProtocol):
    """
    The service manager's end of C{NOTIFY_SOCKET}: collects messages.
    """

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._waiting: list[tuple[str, Deferred]] = []

    def datagramReceived(self, data: bytes, address) -> None:
        message = data.decode("utf-8")
        self.messages.append(message)
        for waiter in list(self._waiting):
            if waiter[0] == message:
                self._waiting.remove(waiter)
                waiter[1].callback(message)

    def waitFor(self, message: str) -> Deferred:
        """
        @return: a L{Deferred} firing when C{message} has arrived.
        """
        waiting: Deferred = Deferred()
        if message in self.messages:
            waiting.callback(message)
        else:
            self._waiting.append((message, waiting))
        return waiting.addTimeout(30, reactor)


class NotifyTests(SynchronousTestCase):
    """
    L{notify} sends one datagram to C{$NOTIFY_SOCKET}.
    """

    def test_address(self) -> None:
        """
        A path is used as it is, C{@name} is an abstract name, anything
        else (or nothing) is no service manager.
        """
        self.assertEqual(notifyAddress({"NOTIFY_SOCKET": "/run/x"}), "/run/x")
        self.assertEqual(notifyAddress({"NOTIFY_SOCKET": "@x"}), b"\0x")
        self.assertIsNone(notifyAddress({"NOTIFY_SOCKET": "x"}))
        self.assertIsNone(notifyAddress({}))

    def test_notify(self) -> None:
        """
        The message arrives as one datagram; without a socket nothing is
        sent, and a socket nobody listens on is not an error.
        """
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        name = f"netservices-test-{id(self)}"
        receiver.bind(b"\0" + name.encode())
        self.assertTrue(notify("READY=1\nSTATUS=up", {"NOTIFY_SOCKET": "@" + name}))
        self.assertEqual(receiver.recv(100), b"READY=1\nSTATUS=up")
        self.assertFalse(notify("READY=1", {}))
        self.assertFalse(notify("READY=1", {"NOTIFY_SOCKET": "@" + name + "-nobody"}))


class SocketActivationTests(TwistdTestCase):
    """
    twistd as systemd runs it (C{contrib/systemd}).
    """

    async def test_tcpEcho(self) -> None:
        """
        tcp-echo serves the inherited socket (C{systemd:domain=INET:index=0}),
        says C{READY=1} once listening, C{STOPPING=1} on SIGTERM, and exits
        with 0.
        """
        directory = self.temporaryDirectory()
        notifications = NotifyListener()
        path = str(Path(directory) / "notify")
        port = reactor.listenUNIXDatagram(path, notifications)
        self.addCleanup(port.stopListening)
        server = await startTwistd(
            reactor,
            ["tcp-echo", "--listen", "systemd:domain=INET:index=0"],
            1,
            env={**childEnvironment(), "NOTIFY_SOCKET": path},
            prefix=activation(),
        )
        self.addCleanup(server.stop)
        [listening] = server.listening
        self.assertEqual(listening.description, "systemd:domain=INET:index=0")
        await notifications.waitFor("READY=1")
        echo = EchoOnce(b"activated")
        await connectProtocol(TCP4ClientEndpoint(reactor, listening.host, listening.port), echo)
        self.assertEqual(await echo.echoed, b"activated")
        self.assertEqual(await server.stop(), CLEAN_STOP)
        self.assertEqual(notifications.messages, ["READY=1", "STOPPING=1"])
        self.assertIn("connections=1 bytes echoed=9", [eventText(e) for e in server.events])
        self.assertNoErrorsLogged(server)

    async def test_byName(self) -> None:
        """
        tcp-info finds the inherited socket by its C{FileDescriptorName}
        too, and answers on it.
        """
        server = await self.startServer(
            ["tcp-info", "--listen", "systemd:domain=INET:name=service"],
            1,
            prefix=activation(),
        )
        host, port = server.addresses[0]
        answer = await fetchStream(reactor, host, port)
        self.assertIn(f"local_port={port}", answer.data.decode())


UNITS = Path(__file__).parents[2] / "contrib" / "systemd"


class UnitFileTests(TwistdTestCase):
    """
    The unit files of C{contrib/systemd}.
    """

    async def test_verify(self) -> None:
        """
        C{systemd-analyze verify} finds nothing wrong with them, once
        C{ExecStart} names this environment's twistd.
        """
        tool = shutil.which("systemd-analyze")
        if tool is None:
            raise SkipTest("systemd-analyze is not installed")
        directory = self.temporaryDirectory()
        twistd = scriptCommand("twistd")[0]
        names = sorted(unit.name for unit in UNITS.iterdir())
        self.assertEqual(
            names,
            ["netservices-tcp-echo.service", "netservices-tcp-echo.socket", "netservices@.service"],
        )
        for name in names:
            text = (UNITS / name).read_text().replace("/opt/netservices/bin/twistd", twistd)
            (directory / name).write_text(text)
        out, err, code = await runProcess(
            reactor, [tool, "verify", *(str(directory / n) for n in names)]
        )
        self.assertEqual((code, out, err), (0, b"", b""))
