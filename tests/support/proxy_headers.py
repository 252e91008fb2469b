"""PROXY protocol v1/v2 headers written by hand, as HAProxy would send them."""

from __future__ import annotations

import ipaddress
import struct

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(client: str, port: int = 40000) -> bytes:
    family = "TCP6" if ":" in client else "TCP4"
    server = "::1" if ":" in client else "127.0.0.1"
    return f"PROXY {family} {client} {server} {port} 25\r\n".encode()


def v2(client: str, port: int = 40000) -> bytes:
    address = ipaddress.ip_address(client)
    if address.version == 4:
        body = address.packed + ipaddress.IPv4Address("127.0.0.1").packed
        family = 0x11  # AF_INET, STREAM
    else:
        body = address.packed + ipaddress.IPv6Address("::1").packed
        family = 0x21  # AF_INET6, STREAM
    body += struct.pack("!HH", port, 25)
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body
