"""Where a webhook may go: which URLs may be registered, and the one resolution an attempt
connects to.

A URL is `http` or `https` with a host name or an address, no user information (it would
go in clear in every request) and no fragment, at most `MAX_URL` characters. Each attempt
resolves the host once, under its own deadline, and refuses a private, loopback,
link-local, multicast, reserved or unspecified address unless `allow_private` (a webhook
must not become a way to reach the inside of our network: SSRF). The connection then goes
to the address that was checked, with the name sent as Host and as TLS SNI: a second
lookup (DNS rebinding) cannot send it elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL = 2_000
MAX_ADDRESSES = 4  # tried in turn when a connection is refused (IPv6 and IPv4, say)
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The destination may not be used (what is wrong, in one sentence)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A registered URL, taken apart."""

    url: str
    scheme: str
    host: str  # a name, or an address without brackets
    port: int
    path: str  # path and query, at least "/"

    @property
    def host_header(self) -> str:
        default = {"http": 80, "https": 443}[self.scheme]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    def pinned_url(self, address: IpAddress) -> str:
        """The URL with its host replaced by the checked address."""
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse(url: str) -> Target:
    """The target of `url`, or `Refused` saying what is wrong with it."""
    if len(url) > MAX_URL:
        raise Refused(f"a webhook URL has at most {MAX_URL} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise Refused("a webhook URL has no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise Refused(f"not a URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise Refused("a webhook URL is http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise Refused("a webhook URL carries no user name or password")
    if parts.fragment:
        raise Refused("a webhook URL has no #fragment (it is never sent)")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise Refused("a webhook URL names a host")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    default = 443 if parts.scheme == "https" else 80
    return Target(url, parts.scheme, host, port or default, path)


def literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def forbidden(address: IpAddress) -> str | None:
    """Why an attempt may not connect to `address` (unless private ones are allowed)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for test, what in (
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_unspecified, "unspecified"),
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
    ):
        if test:
            return f"{address} is a {what} address"
    return None


def check_registration(url: str, allow_private: bool) -> Target:
    """What the API checks when a URL is registered: its form, and an address literal's
    kind (a name is resolved at each attempt, where it counts)."""
    target = parse(url)
    address = literal(target.host)
    if address is not None and not allow_private:
        reason = forbidden(address)
        if reason is not None:
            raise Refused(f"{reason}; webhooks go to public addresses only")
    return target


async def resolve(target: Target, within: float, allow_private: bool) -> list[IpAddress]:
    """The addresses an attempt may connect to, in the resolver's order (at most
    `MAX_ADDRESSES`): the literal, or what the host resolves to within `within` seconds.
    `Refused` when it does not resolve in time, or when any address may not be used (a
    name that answers with an inside address among public ones is refused whole)."""
    address = literal(target.host)
    if address is not None:
        found = [address]
    else:
        found = await _lookup(target, within)
    if not allow_private:
        for each in found:
            reason = forbidden(each)
            if reason is not None:
                raise Refused(f"{target.host}: {reason}; webhooks go to public addresses only")
    return found


async def _lookup(target: Target, within: float) -> list[IpAddress]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(within):
            answers = await loop.getaddrinfo(
                target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
    except TimeoutError:
        raise Refused(f"{target.host} did not resolve within {within:g}s") from None
    except OSError as error:
        raise Refused(f"{target.host} does not resolve: {error.strerror or error}") from None
    found: list[IpAddress] = []
    for answer in answers:
        address = ipaddress.ip_address(answer[4][0])
        if address not in found:
            found.append(address)
    if not found:
        raise Refused(f"{target.host} has no address")
    return found[:MAX_ADDRESSES]
