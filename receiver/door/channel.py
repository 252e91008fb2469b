"""The channel between a host's door and one worker process: a Unix SEQPACKET socketpair.

Each message is one datagram (no framing to parse), its first byte its kind. The door sends
admitted connections with their file descriptor (SCM_RIGHTS) and the client as the door
established it (after its PROXY header and the screen, with any bytes it read meanwhile),
and stress changes. A worker sends back each close at once (before its final reply goes
out, so a client that reconnects after our `221` finds its slot free), the events the
host's live statistics count (refusals in the dialogue, stored messages), the auto-bans it
decides, and its status (readiness, store, spool, metrics) every interval.

Every message is bounded: a hand-over by the PROXY header's limit, a status by
`MAX_STATUS`; anything else is dropped by the reader.
"""

from __future__ import annotations

import json
import socket
from dataclasses import asdict, dataclass, field
from typing import Any

from receiver.door.client import Client

HANDOFF = b"H"  # door -> worker, with one fd: the client (JSON) \0 early bytes
STRESS = b"S"  # door -> worker: b"1" or b"0"
CLOSED = b"C"  # worker -> door: the key of a session that ended
EVENTS = b"E"  # worker -> door: live-statistics events (JSON list)
BAN = b"B"  # worker -> door: an auto-ban (JSON)
STATUS = b"R"  # worker -> door: readiness, store, spool and metrics (JSON)
MAX_STATUS = 1 << 20  # a worker's metrics exposition is some tens of KB
BUFFER = 4 << 20  # socket buffers: hand-overs wait here while a worker is busy
MAX_HANDOFF = 8192  # the client and early bytes (a PROXY header's worth at most)
MAX_EVENTS = 256  # events per datagram


def pair() -> tuple[socket.socket, socket.socket]:
    """(door's end, worker's end), both with room for bursts of hand-overs."""
    door, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (door, worker):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
        end.setblocking(False)
    return door, worker


def handoff(client: Client, early: bytes) -> bytes:
    return HANDOFF + json.dumps(asdict(client), separators=(",", ":")).encode() + b"\0" + early


def read_handoff(message: bytes) -> tuple[Client, bytes]:
    """The client and early bytes of a hand-over; ValueError if it is not one."""
    head, _, early = message[1:].partition(b"\0")
    fields = json.loads(head)
    if not isinstance(fields, dict):
        raise ValueError("not a hand-over")
    return Client(**fields), early


def stress(stressed: bool) -> bytes:
    return STRESS + (b"1" if stressed else b"0")


def closed(key: str) -> bytes:
    return CLOSED + key.encode()


def events(batch: list[list[Any]]) -> bytes:
    return EVENTS + json.dumps(batch, separators=(",", ":")).encode()


def ban(key: str, reason: str, ttl: float) -> bytes:
    return BAN + json.dumps({"key": key, "reason": reason, "ttl": ttl}).encode()


@dataclass(frozen=True)
class WorkerStatus:
    """What a worker says about itself every status interval (in one process: at once)."""

    ready: bool = False
    reason: str = "starting"
    store_up: bool | None = None  # None: no evidence yet
    store_reason: str = ""
    # Messages on this worker's disk while the store is away (None: spool off).
    spool: dict[str, float] | None = None
    pending: int = 0  # inserts whose outcome is not known yet
    metrics: str = field(default="", repr=False)


def status(report: WorkerStatus) -> bytes:
    message = STATUS + json.dumps(asdict(report)).encode()
    if len(message) > MAX_STATUS:  # never expected: the readiness still gets through
        message = STATUS + json.dumps({**asdict(report), "metrics": ""}).encode()
    return message


def read_status(message: bytes) -> WorkerStatus | None:
    body = payload(message)
    if not isinstance(body, dict):
        return None
    try:
        return WorkerStatus(**body)
    except TypeError:
        return None


def payload(message: bytes) -> Any:
    """The JSON body of an EVENTS, BAN or STATUS message (None when it is not JSON)."""
    try:
        return json.loads(message[1:])
    except ValueError:
        return None
