"""
Reference echo servers for benchmarks/run.py, one per process:

    python benchmarks/servers.py NAME [--port N] [--host ADDR]

NAME is one of: twisted-tcp (twisted.protocols.wire.Echo on the default
reactor), twisted-udp (a plain DatagramProtocol echo, maxPacketSize=65535),
asyncio-tcp / asyncio-udp (asyncio Protocol / DatagramProtocol), uvloop-tcp /
uvloop-udp (the same on uvloop's loop).  Listens on 127.0.0.1, port 0 (any)
by default, prints "PORT <n>" once listening, and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys

SERVERS = (
    "twisted-tcp",
    "twisted-udp",
    "asyncio-tcp",
    "asyncio-udp",
    "uvloop-tcp",
    "uvloop-udp",
)


def announce(port: int) -> None:
    print(f"PORT {port}", flush=True)


def runTwisted(kind: str, host: str, port: int) -> None:
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol, Factory
    from twisted.protocols.wire import Echo

    if kind == "tcp":
        factory = Factory.forProtocol(Echo)
        factory.noisy = False
        listening = reactor.listenTCP(port, factory, interface=host)
    else:

        class DatagramEcho(DatagramProtocol):
            noisy = False

            def datagramReceived(self, data, addr):
                self.transport.write(data, addr)

        listening = reactor.listenUDP(
            port, DatagramEcho(), interface=host, maxPacketSize=65535
        )
    announce(listening.getHost().port)
    reactor.run()


def runAsyncio(kind: str, host: str, port: int, useUvloop: bool) -> None:
    import asyncio

    class EchoProtocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    class DatagramEcho(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data, addr)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.cancel)
        if kind == "tcp":
            server = await loop.create_server(EchoProtocol, host, port)
            bound = server.sockets[0].getsockname()[1]
        else:
            transport, _ = await loop.create_datagram_endpoint(
                DatagramEcho, local_addr=(host, port)
            )
            bound = transport.get_extra_info("sockname")[1]
        announce(bound)
        try:
            await stop
        except asyncio.CancelledError:
            pass

    if useUvloop:
        import uvloop

        uvloop.install()
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=SERVERS)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    framework, kind = args.name.split("-")
    try:
        if framework == "twisted":
            runTwisted(kind, args.host, args.port)
        else:
            runAsyncio(kind, args.host, args.port, framework == "uvloop")
    except ImportError as e:
        print(f"servers.py {args.name}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"servers.py {args.name}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
