# -*- test-case-name: tests.info.test_udp -*-
"""
udp-info: answer each datagram with the address and port it came from,
never with more bytes than it carried, and answer STUN Binding Requests.

Largest amplification (answer bytes / request bytes):
  - info answers: 1.0, by rule: a request shorter than its answer is not
    answered;
  - STUN: a minimal 20-byte Binding Request gets 32 bytes for IPv4 (1.6) or
    44 for IPv6 (2.2), rate-limited per source prefix by a bucket of its own.
"""

from __future__ import annotations

import attrs
from twisted.logger import Logger

from netservices._common.addresses import joinHostPort
from netservices._common.datagram import DatagramInfo
from netservices._common.ratelimit import PrefixRateLimiter
from netservices._common.udp import DatagramGuard, GuardedDatagramProtocol
from netservices.info import stun
from netservices.info.tcp import logSighting
from netservices.info.wire import Sighting, formatJSON, formatText, queryWantsJSON


class UDPInfoProtocol(GuardedDatagramProtocol):
    """
    Serves one UDP port of udp-info.
    """

    def __init__(
        self, guard: DatagramGuard, stunLimiter: PrefixRateLimiter, log: Logger
    ) -> None:
        super().__init__(guard)
        self.stunLimiter = stunLimiter
        self.log = log

    def handleDatagram(
        self, data: bytes, addr: tuple[str, int], info: DatagramInfo
    ) -> None:
        host = self.transport.getHost()
        sighting = Sighting(
            transport="udp",
            ip=addr[0],
            port=addr[1],
            localIP=info.destination or host.host,
            localPort=host.port,
        )
        if stun.looksLikeStun(data):
            self._answerStun(data, addr, sighting)
            return
        answer = (formatJSON if queryWantsJSON(data) else formatText)(sighting)
        if len(answer) > len(data):
            self.guard.refusals.refuse(
                "request-shorter-than-answer",
                joinHostPort(*addr),
                size=len(data),
            )
            return
        if self.reply(answer, addr):
            logSighting(self.log, sighting)

    def _answerStun(self, data: bytes, addr: tuple[str, int], sighting: Sighting) -> None:
        try:
            request = stun.parseBindingRequest(data)
        except stun.MalformedStun as e:
            self.guard.refusals.refuse(
                "malformed-stun", joinHostPort(*addr), error=str(e)
            )
            return
        answer = stun.bindingResponse(
            request.transactionID, addr[0], addr[1], request.cookie
        )
        if self.reply(answer, addr, self.stunLimiter):
            logSighting(self.log, attrs.evolve(sighting, transport="stun"))

