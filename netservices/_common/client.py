# -*- test-case-name: tests._common.test_client -*-
"""
Written once for the clients of the C{netservices} command: their one-line
errors, TLS options that verify the server, connecting over TCP (and TLS),
failed connections described in one line, and name resolution for UDP.
"""

from __future__ import annotations

import getopt
import socket

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.threads import deferToThread
from twisted.python import usage

from netservices._common.addresses import joinHostPort, parseIP


class InterspersedOptions(usage.Options):
    """
    Options that may come after the positional arguments too, as people
    type them (C{netservices info udp HOST --json}); C{--} ends them, for
    arguments that start with C{-}.
    """

    def parseOptions(self, options=None) -> None:
        try:
            opts, args = getopt.gnu_getopt(list(options or []), self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e))
        words = []
        for name, value in opts:
            # Flags have no value; a parameter may have an empty one.
            if name.startswith("--"):
                takesValue = name[2:] + "=" in self.longOpt
            else:
                takesValue = name[1:] + ":" in self.shortOpt
            words += [name, value] if takesValue else [name]
        super().parseOptions([*words, "--", *args])


class ClientError(Exception):
    """
    A client could not do its job; the message says why, in one line.
    """


def tlsOptions(serverName: str, caFile: str | None):
    """
    @return: client TLS options verifying the certificate for C{serverName},
        against C{caFile} (PEM) when given, else the system's trust store.
    @raise ClientError: if C{caFile} cannot be read.
    """
    trustRoot = None
    if caFile is not None:
        try:
            with open(caFile, "rb") as f:
                trustRoot = Certificate.loadPEM(f.read())
        except OSError as e:
            raise ClientError(f"cannot read CA file {caFile}: {e.strerror}")
        except Exception:
            raise ClientError(f"CA file {caFile} holds no PEM certificate")
    return optionsForClientTLS(serverName, trustRoot=trustRoot)


def connectionFailure(e: BaseException, host: str, where: str) -> str:
    """
    Describe why a stream connection (plain or TLS) could not be made or
    failed, for the failures every client reports alike.  Timeouts and
    closed connections mean different things to different clients, which
    word them themselves.

    @param host: the host name as the user gave it.
    @param where: C{host:port} as the user should read it.
    @return: one line.
    """
    if isinstance(e, error.ConnectionRefusedError):
        return f"connection refused by {where}"
    if isinstance(e, error.DNSLookupError):
        return f"cannot resolve {host}"
    return f"{where}: {describeFailure(e)}"


def describeFailure(e: BaseException) -> str:
    """
    @return: an exception as one line, TLS failures as people can act on
        them (which name the certificate failed, or OpenSSL's reasons).
    """
    if isinstance(e, VerificationError):
        return f"TLS failed: the certificate is not valid for {_verifiedName(e)}"
    if isinstance(e, SSL.Error):
        details = [a[2] for a in (e.args[0] if e.args else []) if len(a) > 2]
        return "TLS failed: " + (", ".join(details) or "handshake error")
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _verifiedName(e: VerificationError) -> str:
    names = [
        getattr(m.mismatched_id, "hostname", None) or getattr(m.mismatched_id, "ip", "?")
        for m in e.errors
    ]
    return ", ".join(n.decode() if isinstance(n, bytes) else str(n) for n in names)


async def resolveDatagramTarget(host: str, port: int) -> tuple[int, str]:
    """
    Find the address to send datagrams for C{host} to: an IP address as it
    is, a name through C{getaddrinfo} in a thread (its first answer).

    @return: the address family and the IP address.
    @raise ClientError: if the name does not resolve.
    """
    address = parseIP(host)
    if address is not None:
        return (socket.AF_INET if address.version == 4 else socket.AF_INET6), str(address)
    try:
        infos = await deferToThread(socket.getaddrinfo, host, port, 0, socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise ClientError(f"cannot resolve {host}: {e.strerror}")
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr[0]


def streamEndpoint(
    reactor,
    host: str,
    port: int,
    timeout: float,
    tls: bool = False,
    caFile: str | None = None,
    serverName: str | None = None,
):
    """
    @return: the client endpoint for C{host:port}, wrapped in TLS that
        verifies the server's certificate for C{serverName} (default
        C{host}) when asked.
    """
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if tls:
        endpoint = wrapClientTLS(tlsOptions(serverName or host, caFile), endpoint)
    return endpoint


async def connectStream(
    reactor,
    host: str,
    port: int,
    timeout: float,
    protocol,
    ready: defer.Deferred,
    tls: bool = False,
    caFile: str | None = None,
    serverName: str | None = None,
    errorType: type[ClientError] = ClientError,
):
    """
    Connect C{protocol} to C{host:port}, with TLS verifying the server's
    certificate for C{serverName} (default C{host}) when asked, and wait
    for C{ready} (which the protocol fires when it can be used, e.g. after
    the TLS handshake).

    @param timeout: seconds for all of it.
    @return: what C{ready} fired with.
    @raise ClientError: (of C{errorType}) with a one-line reason if that
        fails; L{defer.CancelledError} if the caller cancelled.
    """
    where = joinHostPort(host, port)
    endpoint = streamEndpoint(reactor, host, port, timeout, tls, caFile, serverName)
    connecting = connectProtocol(endpoint, protocol)
    connecting.addCallback(lambda _: ready)
    connecting.addTimeout(timeout, reactor)
    try:
        return await connecting
    except defer.CancelledError:
        raise
    except defer.TimeoutError:
        raise errorType(f"cannot connect to {where} within {timeout:g} s")
    except (error.ConnectionDone, error.ConnectionLost):
        raise errorType(f"{where} closed the connection")
    except ClientError:
        raise
    except Exception as e:
        raise errorType(connectionFailure(e, host, where))


async def untilInterrupted(reactor, coroutine):
    """
    Run C{coroutine}, cancelling it if the reactor is asked to stop (Ctrl-C),
    and holding the stop until it has returned, so that it can still say
    what it did.

    @return: what C{coroutine} returns.
    """
    running = Deferred.fromCoroutine(coroutine)
    finished: Deferred[None] = Deferred()

    def passOn(result):
        finished.callback(None)
        return result

    running.addBoth(passOn)
    interrupted = False

    def interrupt() -> Deferred[None]:
        nonlocal interrupted
        interrupted = True
        running.cancel()
        return finished

    trigger = reactor.addSystemEventTrigger("before", "shutdown", interrupt)
    try:
        return await running
    finally:
        # Once fired, a trigger stays out of the way (and removing it warns).
        if not interrupted:
            reactor.removeSystemEventTrigger(trigger)
