# -*- test-case-name: tests.broadcast.test_wol -*-
"""
C{netservices wol MAC [--interface NAME]}: a Wake-on-LAN magic packet
(6 bytes of 0xFF, then the MAC address 16 times: 102 bytes) to the limited
broadcast address, UDP port 9, out of the named interface by index (so it
works without routes).
"""

from __future__ import annotations

import re
import socket
import struct

from twisted.python import usage

from netservices._common.client import ClientError, InterspersedOptions
from netservices._common.listen import portNumber
from netservices.broadcast.protocol import LIMITED, InterfaceError, chooseInterface, describeInterface

WOL_PORT = 9

_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-]?)[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$")


def parseMAC(text: str) -> bytes:
    """
    @return: the 6 bytes of C{aa:bb:cc:dd:ee:ff}, C{aa-bb-...} or
        C{aabbccddeeff}.
    @raise ValueError: with a message fit for the user.
    """
    if not _MAC.match(text.strip()):
        raise ValueError(f"{text!r} is not a MAC address (like 52:54:00:12:34:56)")
    return bytes.fromhex(re.sub("[:-]", "", text.strip()))


def magicPacket(mac: bytes) -> bytes:
    """
    @return: the magic packet waking C{mac}.
    """
    if len(mac) != 6:
        raise ValueError("a MAC address has 6 bytes")
    return b"\xff" * 6 + mac * 16


def sendMagicPacket(mac: bytes, interface: str, port: int = WOL_PORT) -> int:
    """
    Send the magic packet for C{mac} out of C{interface}.

    @return: bytes sent.
    @raise ClientError: if it cannot be sent.
    """
    try:
        index = describeInterface(interface).index
    except InterfaceError as e:
        raise ClientError(str(e))
    packet = magicPacket(mac)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as skt:
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        pktinfo = (socket.IPPROTO_IP, getattr(socket, "IP_PKTINFO", 8),
                   struct.pack("=i4s4s", index, bytes(4), bytes(4)))
        try:
            return skt.sendmsg([packet], [pktinfo], 0, (LIMITED, port))
        except OSError as e:
            raise ClientError(f"cannot send on {interface}: {e.strerror}")


class WolOptions(InterspersedOptions):
    """
    C{netservices wol MAC [--interface NAME]}.
    """

    synopsis = "MAC [--interface NAME]"
    longdesc = (
        "Send a Wake-on-LAN magic packet for MAC to 255.255.255.255 port 9 out"
        " of the interface (default: the only one up besides lo), by interface"
        " index, so it works without routes."
    )
    optParameters = [
        ["interface", "i", None, "Interface to send on, by name."],
        ["port", "p", WOL_PORT, "UDP port (7 and 9 are usual).", portNumber],
    ]
    optFlags = [["json", None, "Print what was sent as JSON."]]

    def parseArgs(self, mac: str) -> None:
        try:
            self["mac"] = parseMAC(mac)
        except ValueError as e:
            raise usage.UsageError(str(e))

    def postOptions(self) -> None:
        if not self["interface"]:
            try:
                self["interface"] = chooseInterface()
            except InterfaceError as e:
                raise usage.UsageError(f"--interface: {e}")

    async def run(self, reactor) -> int:
        sent = sendMagicPacket(self["mac"], self["interface"], self["port"])
        mac = ":".join(f"{b:02x}" for b in self["mac"])
        if self["json"]:
            import json

            print(json.dumps({"event": "sent", "mac": mac, "interface": self["interface"],
                              "destination": f"{LIMITED}:{self['port']}", "bytes": sent}))
        else:
            print(f"sent a magic packet for {mac} ({sent} bytes) to {LIMITED}:{self['port']} on {self['interface']}")
        return 0
