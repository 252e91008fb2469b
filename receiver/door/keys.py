"""Client keys: the unit every per-client limit counts by.

IPv4 clients are keyed by address. IPv6 clients are keyed by their /64 (configurable),
because one host commonly holds a whole /64 and could otherwise rotate addresses to dodge
every per-IP limit. IPv4-mapped IPv6 addresses are keyed as the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress
import socket

_V4_MAPPED = "::ffff:"


def client_key(ip: str, ipv6_prefix: int = 64) -> str:
    """The key for `ip`: `"203.0.113.7"` or `"2001:db8:1:2::/64"`."""
    if ":" not in ip:
        return ip
    if ip.lower().startswith(_V4_MAPPED) and "." in ip:
        return ip[len(_V4_MAPPED) :]
    packed = socket.inet_pton(socket.AF_INET6, ip.split("%", 1)[0])
    if ipv6_prefix >= 128:
        return str(ipaddress.IPv6Address(packed))
    value = int.from_bytes(packed, "big")
    mask = ((1 << ipv6_prefix) - 1) << (128 - ipv6_prefix)
    network = ipaddress.IPv6Network((value & mask, ipv6_prefix))
    return str(network)


def key_network(key: str) -> str:
    """The CIDR a key stands for, as a blocklist entry would name it."""
    return key if "/" in key else f"{key}/32" if ":" not in key else f"{key}/128"


def network_key(key: str) -> str:
    """The network a client key belongs to, for per-network caps: the IPv4 /24 or the
    IPv6 /48 (a site's allocation, RFC 6177) that holds it."""
    if ":" not in key:
        head, _, _ = key.rpartition(".")
        return f"{head}.0/24"
    address = key.split("/", 1)[0]
    return str(ipaddress.IPv6Network((address, 48), strict=False))
