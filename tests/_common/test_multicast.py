"""
Tests for L{netservices._common.multicast}: request packing, limits,
error messages, and (in a namespace lab) the kernel facts the module
relies on.
"""

from __future__ import annotations

import errno
import socket
import struct

from twisted.trial.unittest import SynchronousTestCase

from netservices._common import multicast
from netservices._common.multicast import (
    MulticastError,
    checkSocketLimits,
    groupRequest,
    prepareSocket,
    sockaddrStorage,
)


class PackingTests(SynchronousTestCase):
    """
    C{struct group_req} and C{group_source_req} as 64-bit Linux lays them
    out.
    """

    def test_groupRequest(self) -> None:
        """
        Index, 4 bytes of padding, then 128-byte socket addresses.
        """
        request = groupRequest(7, "239.1.2.3")
        self.assertEqual(len(request), 136)
        self.assertEqual(struct.unpack_from("=I", request)[0], 7)
        self.assertEqual(request[8:16], struct.pack("=HH4s", socket.AF_INET, 0, bytes([239, 1, 2, 3])))
        withSource = groupRequest(7, "ff3e::1", "fd00::1")
        self.assertEqual(len(withSource), 264)
        self.assertEqual(withSource[136:138], struct.pack("=H", socket.AF_INET6))
        self.assertEqual(withSource[144:160], socket.inet_pton(socket.AF_INET6, "fd00::1"))

    def test_sockaddrStorage(self) -> None:
        """
        128 bytes, family first.
        """
        self.assertEqual(len(sockaddrStorage("ff15::1")), 128)
        self.assertEqual(sockaddrStorage("1.2.3.4")[4:8], bytes([1, 2, 3, 4]))


class LimitTests(SynchronousTestCase):
    """
    The per-socket limits are checked before anything starts.
    """

    def setUp(self) -> None:
        groups, sources = self.mktemp(), self.mktemp()
        with open(groups, "w") as f:
            f.write("20\n")
        with open(sources, "w") as f:
            f.write("10\n")
        self.patch(multicast, "IGMP_MAX_MEMBERSHIPS", groups)
        self.patch(multicast, "IGMP_MAX_MSF", sources)

    def test_limits(self) -> None:
        """
        Up to the sysctl values is fine; beyond, the error names the sysctl.
        IPv6 has no such small limit.
        """
        checkSocketLimits(socket.AF_INET, 20, 10)
        with self.assertRaises(MulticastError) as caught:
            checkSocketLimits(socket.AF_INET, 21, 1)
        self.assertIn("net.ipv4.igmp_max_memberships", str(caught.exception))
        with self.assertRaises(MulticastError) as caught:
            checkSocketLimits(socket.AF_INET, 1, 11)
        self.assertIn("net.ipv4.igmp_max_msf", str(caught.exception))
        checkSocketLimits(socket.AF_INET6, 1000, 100)

    def test_unreadable(self) -> None:
        """
        Without the files, the kernel defaults (20, 10) apply.
        """
        self.patch(multicast, "IGMP_MAX_MEMBERSHIPS", "/nonexistent")
        self.assertRaises(MulticastError, checkSocketLimits, socket.AF_INET, 21, 1)


class SocketTests(SynchronousTestCase):
    """
    Socket options, on sockets of this host (nothing is sent).
    """

    def test_prepare(self) -> None:
        """
        MULTICAST_ALL is off, SO_REUSEADDR on and SO_REUSEPORT off, and
        IPv6 sockets are IPv6 only.
        """
        for family, level, option in [
            (socket.AF_INET, socket.IPPROTO_IP, multicast.IP_MULTICAST_ALL),
            (socket.AF_INET6, socket.IPPROTO_IPV6, multicast.IPV6_MULTICAST_ALL),
        ]:
            try:
                skt = socket.socket(family, socket.SOCK_DGRAM)
            except OSError:
                continue
            with skt:
                prepareSocket(skt, family)
                self.assertEqual(skt.getsockopt(level, option), 0)
                self.assertEqual(skt.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR), 1)
                self.assertEqual(skt.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT), 0)
                if family == socket.AF_INET6:
                    self.assertEqual(skt.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY), 1)

    def test_sendOptions(self) -> None:
        """
        TTL and hop limit go to the option of the socket's own family:
        IPV6_MULTICAST_HOPS on IPv6 (where Twisted's setTTL sets the IPv4
        option).
        """
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as skt:
            multicast.setSendOptions(skt, socket.AF_INET6, ttl=7, loop=False)
            self.assertEqual(skt.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS), 7)
            self.assertEqual(skt.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP), 0)
            self.assertEqual(multicast.getHopLimit(skt, socket.AF_INET6), 7)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as skt:
            multicast.setSendOptions(skt, socket.AF_INET, ttl=3)
            self.assertEqual(multicast.getHopLimit(skt, socket.AF_INET), 3)

    def test_joinErrors(self) -> None:
        """
        Join failures become one sentence: no route, too many groups, or
        the kernel's reason.
        """
        self.assertIn(
            "no route to the group",
            str(multicast._joinError(OSError(errno.ENODEV, "No such device"), "239.1.1.1", 0, None)),
        )
        self.assertIn(
            "igmp_max_memberships",
            str(multicast._joinError(OSError(errno.ENOBUFS, "No buffer space"), "239.1.1.1", 2, None)),
        )
        self.assertIn(
            "(10.0.0.1, 232.1.1.1) on interface index 2: No such device",
            str(multicast._joinError(OSError(errno.ENODEV, "No such device"), "232.1.1.1", 2, "10.0.0.1")),
        )

    def test_unknownInterface(self) -> None:
        """
        An interface name that does not exist is an error naming it.
        """
        with self.assertRaises(MulticastError) as caught:
            multicast.interfaceIndex("nosuch0")
        self.assertIn("nosuch0", str(caught.exception))
