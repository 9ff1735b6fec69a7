# -*- test-case-name: tests._common.test_systemd -*-
"""
systemd's readiness protocol (C{Type=notify}), in a few lines of socket
code: C{sd_notify(3)} is one datagram to the UNIX socket named by
C{$NOTIFY_SOCKET} (a path, or C{@name} for the abstract namespace).

Socket activation itself needs nothing here: Twisted's C{systemd:}
endpoint adopts the descriptors that systemd passes (C{LISTEN_FDS},
C{LISTEN_PID}, C{LISTEN_FDNAMES}, from descriptor 3 on).
"""

from __future__ import annotations

import os
import socket
from typing import Mapping


def notifyAddress(environ: Mapping[str, str]) -> str | bytes | None:
    """
    @return: the address of C{$NOTIFY_SOCKET} for C{socket.sendto} (bytes
        with a leading NUL for an abstract name), or L{None} if it is not
        set or not a UNIX socket.
    """
    name = environ.get("NOTIFY_SOCKET", "")
    if name.startswith("@"):
        return b"\0" + name[1:].encode("utf-8")
    if name.startswith("/"):
        return name
    return None


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """
    Send C{message} (e.g. C{"READY=1"}, C{"STOPPING=1"}, C{"STATUS=..."};
    several separated by newlines) to the service manager, if there is one.

    @return: whether it was sent.
    """
    address = notifyAddress(os.environ if environ is None else environ)
    if address is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        try:
            sender.sendto(message.encode("utf-8"), address)
        except OSError:
            return False
    return True
