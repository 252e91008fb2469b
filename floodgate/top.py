"""`floodgate top`: the live terminal view of every receiver (from `GET /v1/stats`).

Receivers with their store and stress state, accepted/refused/stored per second, and the
heaviest clients of the last minute (refusals, connections admitted, messages stored,
connections open now) with their blocklist state. Keys: up/down (or k/j)
select a client, `b` bans it for an hour, `u` lifts its entry, `q` quits. `--once` prints
one frame and exits (for scripts and for a terminal without keys).

An outage never ends the view: while the API does not answer, the last snapshot stays on
screen under "API unreachable since ..." and the poll is retried every interval; while
the store is away the API serves the last statistics it read, and the view says "store
away since ...".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from floodgate.block_cli import ApiError, Client

if TYPE_CHECKING:
    from rich.console import Group

# rich is imported where the view is drawn, not here: `floodgate` imports this module for
# its command line, and every other command (a receiver first) starts without rich.

BAN_TTL = 3600
BAN_REASON = "banned from floodgate top"
KEYS_UP = {"k", "\x1b[A"}
KEYS_DOWN = {"j", "\x1b[B"}
Snapshot = tuple[float, dict[str, int]]  # (published at, totals)


@dataclass
class View:
    """What the screen shows, and which client is selected."""

    stats: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    selected: int = 0
    rates: dict[str, float] = field(default_factory=dict)
    message: str = ""
    outage: str = ""  # what is away and since when; empty while all answers
    _api_away_since: float | None = None
    _snapshots: dict[str, tuple[Snapshot | None, Snapshot | None]] = field(default_factory=dict)

    def update(self, stats: dict[str, Any]) -> None:
        self.stats = stats
        self.rows = top_clients(stats)
        self.selected = min(self.selected, max(0, len(self.rows) - 1))
        store = stats.get("store") or {"up": True}
        if store["up"]:
            self.rates = self._rates(stats["receivers"])
        self._api_away_since = None
        self.outage = store_line(store)

    def api_away(self, error: str, now: float | None = None) -> None:
        """The poll failed: keep what is shown, say since when the API is away."""
        if self._api_away_since is None:
            self._api_away_since = time.time() if now is None else now
        since = time.strftime("%H:%M:%S", time.localtime(self._api_away_since))
        shown = "showing the last snapshot" if self.stats else "nothing to show yet"
        self.outage = f"API unreachable since {since} ({error}): {shown}; retrying"

    def _rates(self, receivers: list[dict[str, Any]]) -> dict[str, float]:
        """Per second, from each receiver's last two distinct snapshots (it publishes every
        5 s); empty until some receiver has two."""
        total = {"accepted": 0.0, "refused": 0.0, "stored": 0.0}
        measured = False
        for r in receivers:
            older, newer = self._snapshots.get(r["receiver"], (None, None))
            if newer is None or r["at"] > newer[0]:
                older, newer = newer, (r["at"], r["totals"])
                self._snapshots[r["receiver"]] = (older, newer)
            if older is None:
                continue
            measured = True
            for key in total:
                total[key] += max(0, newer[1][key] - older[1][key]) / (newer[0] - older[0])
        return total if measured else {}

    def move(self, step: int) -> None:
        if self.rows:
            self.selected = (self.selected + step) % len(self.rows)

    @property
    def chosen(self) -> dict[str, Any] | None:
        return self.rows[self.selected] if self.rows else None


def top_clients(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per client named anywhere in the last minute's tops, heaviest first."""
    window = stats["overall"]["windows"].get("1m", {})
    rows: dict[str, dict[str, Any]] = {}

    def row(key: str) -> dict[str, Any]:
        state = stats["clients"].get(key, {"blocked": False})
        return rows.setdefault(
            key,
            {
                "client": key,
                "refused": 0,
                "why": "",
                "connections": 0,
                "messages": 0,
                "open": 0,
                "state": state,
            },
        )

    for key, count in window.get("refusals", []):
        row(key)["refused"] = count
    best: dict[str, int] = {}
    for reason, tops in window.get("by_reason", {}).items():
        for key, count in tops:
            if count > best.get(key, 0):
                best[key] = count
                row(key)["why"] = reason
    for key, count in window.get("connections", []):
        row(key)["connections"] = count
    for key, count in window.get("messages", []):
        row(key)["messages"] = count
    for key, count in stats["overall"]["top_open"]:
        row(key)["open"] = count
    return sorted(
        rows.values(),
        key=lambda r: (-r["refused"], -r["connections"], -r["open"], -r["messages"]),
    )


def store_line(store: dict[str, Any]) -> str:
    """The API's word on the store: empty while it answers."""
    if store.get("up", True):
        return ""
    since = time.strftime("%H:%M:%S", time.localtime(store["away_since"]))
    read_at = store.get("read_at")
    shown = (
        f"showing the statistics read at {time.strftime('%H:%M:%S', time.localtime(read_at))}"
        if read_at is not None
        else "no statistics read since the API started"
    )
    return f"store away since {since} ({store.get('reason', '')}): {shown}; retrying"


def spool_cell(spool: dict[str, Any] | None) -> str:
    """A receiver's spool: off, empty, or what it holds and for how long."""
    if spool is None:
        return "off"
    if not spool.get("messages"):
        return "empty"
    return f"[yellow]{spool['messages']} msgs, oldest {spool['oldest_s']:.0f}s[/yellow]"


def render(view: View) -> Group:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    receivers = Table(title="receivers", expand=True)
    for column in ("receiver", "age", "store", "stress", "open", "spool"):
        receivers.add_column(column, justify="right" if column in ("age", "open") else "left")
    for r in view.stats.get("receivers", []):
        store = "up" if r["store_up"] else f"[red]down: {r['store_reason']}[/red]"
        stress = "[red]STRESS[/red]" if r["stress"] else "no"
        receivers.add_row(
            r["receiver"],
            f"{r['age_s']:.1f}s",
            store,
            stress,
            str(r["open_connections"]),
            spool_cell(r.get("spool")),
        )
    rates = view.rates
    opened = view.stats.get("overall", {}).get("open_connections", 0)
    per_second = (
        f"per second: accepted {rates['accepted']:.0f}, refused {rates['refused']:.0f}, "
        f"stored {rates['stored']:.0f}"
        if rates
        else "per second: from the next snapshot on (receivers publish every 5 s)"
    )
    summary = Text(f"{per_second}; open connections {opened}")
    clients = Table(title="top clients, last minute", expand=True)
    for column in ("client", "refused", "why", "conns", "messages", "open", "state"):
        left = column in ("client", "why", "state")
        clients.add_column(column, justify="left" if left else "right")
    for index, r in enumerate(view.rows):
        state = r["state"]
        label = f"blocked ({state.get('source')})" if state.get("blocked") else ""
        clients.add_row(
            r["client"],
            str(r["refused"]),
            r["why"],
            str(r["connections"]),
            str(r["messages"]),
            str(r["open"]),
            label,
            style="reverse" if index == view.selected else None,
        )
    keys = Text("up/down select   b ban (1 h)   u unban   q quit", style="dim")
    outage = Text(view.outage, style="bold black on yellow")
    return Group(outage, receivers, summary, clients, Text(view.message, style="bold"), keys)


def act(client: Client, view: View, key: str) -> bool:
    """Apply one key; False when it asks to quit."""
    if key in ("q", "\x03"):
        return False
    if key in KEYS_UP:
        view.move(-1)
    elif key in KEYS_DOWN:
        view.move(1)
    elif key in ("b", "u") and view.chosen is not None:
        target = view.chosen["client"]
        try:
            view.message = ban(client, target) if key == "b" else unban(client, target)
        except ApiError as error:
            view.message = str(error)
    return True


def ban(client: Client, target: str) -> str:
    body = {"cidr": target, "reason": BAN_REASON, "ttl_seconds": BAN_TTL}
    response = client.call("POST", "/v1/blocklist", json=body)
    if response.status_code not in (200, 201):
        return f"ban refused: {response.text[:120]}"
    return f"banned {target} for an hour"


def unban(client: Client, target: str) -> str:
    check = client.call("GET", f"/v1/blocklist/check/{target.split('/')[0]}").json()
    if not check.get("blocked"):
        return f"{target} is not blocked"
    cidr = check["entry"]["cidr"]
    client.call("DELETE", f"/v1/blocklist/{quote(cidr, safe='')}")
    return f"removed {cidr}"


@contextlib.contextmanager
def keys() -> Iterator[None]:
    """The terminal in cbreak mode (single keys, no echo) while the view runs."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def read_key(timeout: float) -> str | None:
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    if not ready:
        return None
    data = os.read(sys.stdin.fileno(), 8).decode(errors="replace")
    return data


def poll(client: Client, view: View) -> None:
    """One poll: the view updated, or, when the API is away, kept and said so (a refused
    token still ends the command: asking again would not help)."""
    try:
        view.update(client.call("GET", "/v1/stats").json())
    except ApiError as error:
        if not error.away:
            raise
        view.api_away(str(error))


def run(client: Client, interval: float, once: bool) -> int:
    view = View()
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if once or not sys.stdin.isatty():
        view.update(client.call("GET", "/v1/stats").json())  # --once: an error is the answer
        time.sleep(0 if once else interval)
        console.print(render(view))
        return 0
    poll(client, view)
    with keys(), Live(render(view), console=console, screen=True, auto_refresh=False) as live:
        next_poll = time.monotonic() + interval
        while True:
            key = read_key(max(0.0, next_poll - time.monotonic()))
            if key is not None and not act(client, view, key):
                return 0
            if time.monotonic() >= next_poll:
                poll(client, view)
                next_poll = time.monotonic() + interval
            live.update(render(view), refresh=True)


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "top",
        help="live view of every receiver: top clients, refusals, stress; ban from the keyboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--api", help="API base URL (default: http://FLOODGATE_API_LISTEN)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
