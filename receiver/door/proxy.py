"""PROXY protocol v1/v2 headers, parsed by aiosmtpd's public `get_proxy`.

The session buffers bytes until a whole header is there (v1: one CRLF-ended line of at
most 107 octets; v2: 16 octets plus the announced length), then runs aiosmtpd's parser on
exactly those bytes. The parser never has to wait for data, so it runs to completion in
one step: no task and no stream per connection.
"""

from __future__ import annotations

import ipaddress

from aiosmtpd.proxy_protocol import get_proxy

V1_MAX = 107  # the longest v1 header, CRLF included (proxy-protocol.txt 2.1)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_HEADER = 4096  # v2 with TLVs; more than any proxy of ours sends
BAD = -1


def header_length(buffer: bytes | bytearray) -> int | None:
    """The length of the complete header at the start of `buffer`, None if more bytes
    are needed, or BAD if it cannot be a PROXY header."""
    if buffer[:5] == b"PROXY"[: len(buffer)] and len(buffer) < 5:
        return None
    if buffer.startswith(b"PROXY"):
        end = buffer.find(b"\r\n", 0, V1_MAX)
        if end >= 0:
            return end + 2
        return BAD if len(buffer) >= V1_MAX else None
    if not V2_SIGNATURE.startswith(bytes(buffer[:12])):
        return BAD
    if len(buffer) < 16:
        return None
    total = 16 + int.from_bytes(buffer[14:16], "big")
    if total > MAX_HEADER:
        return BAD
    return total if len(buffer) >= total else None


class _Bytes:
    """aiosmtpd's AsyncReader over bytes already received."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self, n: int = -1) -> bytes:
        n = len(self._data) if n < 0 else n
        chunk, self._data = self._data[:n], self._data[n:]
        return chunk

    async def readexactly(self, n: int) -> bytes:
        if n > len(self._data):
            raise ValueError("PROXY header shorter than announced")
        return await self.read(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        end = self._data.find(separator)
        if end < 0:
            raise ValueError("PROXY header without its terminator")
        return await self.read(end + len(separator))


def client_address(header: bytes) -> tuple[bool, str | None]:
    """(valid, client IP) from a complete header; a v2 LOCAL command (the proxy's own
    health check) is valid and names no client."""
    coroutine = get_proxy(_Bytes(header))
    try:
        coroutine.send(None)
    except StopIteration as done:
        data = done.value
    else:  # it tried to wait: cannot happen with all bytes present
        coroutine.close()
        return False, None
    if not data.valid:
        return False, None
    source = data.src_addr
    if isinstance(source, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return True, str(source)
    return True, None
