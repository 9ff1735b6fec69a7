# -*- test-case-name: tests.echo.test_udp -*-
"""
udp-echo: each datagram back to its sender, byte for byte, within the UDP
policy (no answers to broadcast or multicast destinations, to reserved or
our own ports, or beyond the rate limits).
"""

from __future__ import annotations

from netservices._common.datagram import DatagramInfo
from netservices._common.udp import GuardedDatagramProtocol


class UDPEchoProtocol(GuardedDatagramProtocol):
    """
    Serves one UDP port of udp-echo.  It needs nothing from a datagram's
    L{DatagramInfo} but the destination check, so on a unicast bind its
    port reads without ancillary data
    (L{netservices._common.datagram.InfoDatagramPort}).
    """

    wantsDatagramInfo = False

    def handleDatagram(
        self, data: bytes, addr: tuple[str, int], info: DatagramInfo
    ) -> None:
        self.reply(data, addr)
