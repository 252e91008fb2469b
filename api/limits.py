"""The API's limits on reading: render workers, read rates, downloads and live push.
Declared once, here; the settings fields (`FLOODGATE_RENDER_*`, `FLOODGATE_PUSH_*`,
`FLOODGATE_READ_*`...) take default and range from it."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024

RANGES: dict[str, tuple[float, float]] = {
    "render_workers": (1, 64),
    "render_queue": (0, 10_000),
    "render_seconds": (0.05, 60),
    "render_memory": (64 * MIB, 16_384 * MIB),
    "render_queue_per_client": (1, 10_000),
    "render_cache": (0, 16_384 * MIB),
    "push_per_client": (1, 10_000),
    "push_per_mailbox": (1, 10_000),
    "push_per_client_mailbox": (1, 10_000),
    "push_per_network": (1, 100_000),
    "read_rate": (0.1, 1_000_000),
    "read_burst": (1, 1_000_000),
    "read_hold": (0, 10),
    "reads_at_once": (1, 32),
    "downloads_per_client": (1, 10_000),
    "send_timeout": (0.05, 3_600),
}


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """How much of the API one message, one client and one mailbox may take."""

    # Processes rendering messages larger than `SMALL_MESSAGE` at once; two more serve
    # small messages only, so everyday mail renders at once while big ones queue. One
    # client holds at most half of either lane (api.renderpool).
    render_workers: int = 2
    # Render jobs that may wait for a worker (per lane); beyond: 503 and Retry-After.
    render_queue: int = 16
    # Of those, what one client may have waiting (per lane; beyond: 429 and Retry-After);
    # waiting clients are served in turn (api.fairqueue).
    render_queue_per_client: int = 4
    # Bytes of successful render answers kept (views, links, attachments: api.rendercache).
    render_cache: int = 64 * MIB
    # A render's deadline: past it the worker process is killed and the work stops.
    render_seconds: float = 3.0
    # Address space a worker may map beyond its own start-up size (RLIMIT_AS).
    render_memory: int = 256 * MIB
    # Live event streams per client (an IPv4 address or an IPv6 /64), per mailbox.
    push_per_client: int = 20
    push_per_mailbox: int = 20
    # ...per client on one mailbox, and per network (an IPv4 /24 or an IPv6 /48), so that
    # neither one client nor one network can take a mailbox's or the API's every stream.
    push_per_client_mailbox: int = 4
    push_per_network: int = 100
    # Mailbox and message reads (GET /v1/mailboxes/..., /v1/messages/...) per client: a
    # token bucket refilled at `read_rate` a second, holding at most `read_burst`.
    # A person, the page, or a test script polling for its mail never meets these.
    read_rate: float = 50.0
    read_burst: int = 500
    # Seconds a request refused for one of its client's shares (reads a second, renders
    # waiting, downloads) waits before its 429 (at most `HELD_PER_CLIENT` of a client's at
    # once): a client past its share on many connections is slowed to one request per
    # connection per hold, instead of costing the API as much as every other client's reads.
    read_hold: float = 1.0
    # Mailbox and message reads of one client worked on at once (of 32 for all clients);
    # its others wait for its turn, clients served in turn (api.shares.read_turn).
    reads_at_once: int = 2
    # Message bodies (/raw, attachments) one client may be downloading at once.
    downloads_per_client: int = 4
    # Seconds one write of an answer may wait for a reader that does not read.
    send_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name}={value} is outside [{low:g}, {high:g}]")


DEFAULTS = ApiLimits()
