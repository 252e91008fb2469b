"""The channel between a host's gate and one of its workers: a Unix SEQPACKET socketpair.

Each message is one datagram (no framing to parse), its first byte its kind. The gate
sends admitted connections with their file descriptor (SCM_RIGHTS) and the client's
identity as the gate established it (after a PROXY header, with any bytes it read past
it), and stress changes; a worker sends back every close (the gate holds the counts),
the auto-bans it decides, and its status (readiness and metrics) every second.

Every message is bounded: a hand-over by the PROXY header's limit, a status by
`MAX_STATUS`; anything else is dropped by the reader.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

HANDOFF = b"H"  # gate -> worker, with one fd: key \0 ip \0 early bytes
STRESS = b"S"  # gate -> worker: b"1" or b"0"
CLOSED = b"C"  # worker -> gate: keys of closed connections, \n-separated
BAN = b"B"  # worker -> gate: an auto-ban (JSON)
STATUS = b"R"  # worker -> gate: readiness and metrics (JSON)
MAX_STATUS = 1 << 20  # a worker's metrics exposition is some tens of KB
BUFFER = 4 << 20  # socket buffers: hand-overs wait here while a worker is busy
MAX_HANDOFF = 8192  # key, address and early bytes (a PROXY header's worth at most)


def pair() -> tuple[socket.socket, socket.socket]:
    """(gate's end, worker's end), both with room for bursts of hand-overs."""
    gate, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (gate, worker):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    gate.setblocking(False)
    return gate, worker


@dataclass(frozen=True, slots=True)
class Handoff:
    """An admitted connection as the gate hands it over."""

    key: str
    ip: str
    early: bytes = b""

    def encode(self) -> bytes:
        return HANDOFF + self.key.encode() + b"\0" + self.ip.encode() + b"\0" + self.early

    @classmethod
    def decode(cls, message: bytes) -> Handoff:
        key, ip, early = message[1:].split(b"\0", 2)
        return cls(key.decode(), ip.decode(), early)


def closed(keys: list[str]) -> bytes:
    return CLOSED + "\n".join(keys).encode()


def closed_keys(message: bytes) -> list[str]:
    return message[1:].decode().split("\n") if len(message) > 1 else []


def ban(key: str, reason: str, ttl: float) -> bytes:
    return BAN + json.dumps({"key": key, "reason": reason, "ttl": ttl}).encode()


def status(ready: bool, reason: str, metrics: str) -> bytes:
    body = {"ready": ready, "reason": reason, "metrics": metrics}
    message = STATUS + json.dumps(body).encode()
    if len(message) > MAX_STATUS:  # never expected: the readiness still gets through
        message = STATUS + json.dumps({**body, "metrics": ""}).encode()
    return message


def payload(message: bytes) -> dict[str, Any]:
    """The JSON body of a BAN or STATUS message ({} when it is not one)."""
    try:
        value = json.loads(message[1:])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
