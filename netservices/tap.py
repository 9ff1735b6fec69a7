# -*- test-case-name: tests.test_tap -*-
"""
The C{netservices} twistd plugin: one sub-command per service.

Each service's module is imported only when its sub-command is chosen, so a
broken service cannot hide the others and C{twistd --help} stays fast.
"""

from __future__ import annotations

from importlib import import_module

from twisted.python import usage

#: (sub-command, module, options class, service maker, description)
SERVICES = [
    (
        "chat",
        "netservices.chat.tap",
        "ChatOptions",
        "makeService",
        "An IRC chat server: channels, private messages, TLS; zero configuration",
    ),
    (
        "tcp-info",
        "netservices.info.tap",
        "TCPInfoOptions",
        "makeTCPService",
        "Tell each TCP client its address and port (also over HTTP)",
    ),
    (
        "tcp-echo",
        "netservices.echo.tap",
        "TCPEchoOptions",
        "makeTCPService",
        "RFC 862 echo over TCP, with back-pressure",
    ),
    (
        "udp-echo",
        "netservices.echo.tap",
        "UDPEchoOptions",
        "makeUDPService",
        "RFC 862 echo over UDP, never a reflector for abuse",
    ),
    (
        "udp-info",
        "netservices.info.tap",
        "UDPInfoOptions",
        "makeUDPService",
        "Tell each UDP client its address and port; STUN Binding",
    ),
    (
        "threaded",
        "netservices.threaded.tap",
        "ThreadedOptions",
        "makeService",
        "Serve blocking Python functions on a bounded thread pool",
    ),
    (
        "multicast",
        "netservices.multicast.tap",
        "MulticastOptions",
        "makeService",
        "Join multicast groups (IPv4/IPv6, ASM/SSM); log, count, answer pings",
    ),
    (
        "broadcast",
        "netservices.broadcast.tap",
        "BroadcastOptions",
        "makeService",
        "A LAN broadcast peer that logs and counts every message (TTL 255 only)",
    ),
]


#: The stateless services, which take C{--workers N}.
WORKER_SERVICES = frozenset({"tcp-info", "udp-info", "tcp-echo", "udp-echo"})


def _lazyOptions(service: str, module: str, name: str):
    def options():
        from netservices._common.operations import withOperations

        optionsClass = getattr(import_module(module), name)
        return withOperations(optionsClass, service, service in WORKER_SERVICES)()

    return options


class Options(usage.Options):
    """
    Top-level options: choose a service.
    """

    synopsis = "[options]"
    longdesc = "Run 'twistd netservices SERVICE --help' for a service's options."
    subCommands = [
        (name, None, _lazyOptions(name, module, options), description)
        for name, module, options, _, description in SERVICES
    ]

    def parseOptions(self, options=None) -> None:
        # twistd prints its whole usage text before a UsageError; one line
        # that names the problem is more useful.
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            where = f"netservices {self.subCommand}" if self.subCommand else "netservices"
            raise SystemExit(f"{where}: {e} (see --help)")

    def postOptions(self) -> None:
        if self.subCommand is None:
            names = ", ".join(name for name, *_ in SERVICES)
            raise usage.UsageError(f"choose a service: {names}")


def makeService(options: Options):
    """
    @return: the service of the chosen sub-command, with the operations
        every sub-command has (L{netservices._common.operations}: metrics,
        graceful stop, systemd readiness).
    """
    from netservices._common.operations import operationsService

    for name, module, _, maker, _ in SERVICES:
        if name == options.subCommand:
            build = getattr(import_module(module), maker)
            return operationsService(
                options.subOptions, lambda: build(options.subOptions)
            )
    raise ValueError(f"unknown service {options.subCommand!r}")
