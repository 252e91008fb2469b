"""`floodgate top`'s view: rates from two snapshots per receiver, rows heaviest first,
selection that wraps. (The whole command runs against real processes in tests/api.)"""

from __future__ import annotations

import io
from typing import Any

import pytest

from floodgate.block_cli import ApiError
from floodgate.top import View, poll, render, top_clients


def stats(at: float, refused: int, stored: int) -> dict[str, Any]:
    totals = {"accepted": 10, "refused": refused, "stored": stored, "stored_bytes": 0}
    window = {
        "refusals": [["192.0.2.7", 40], ["192.0.2.8", 3]],
        "connections": [["192.0.2.10", 60], ["192.0.2.9", 5]],
        "messages": [["192.0.2.9", 5]],
        "by_reason": {"blocked": [["192.0.2.7", 30]], "per_ip_cap": [["192.0.2.7", 10]]},
    }
    receiver = {
        "receiver": "mx1",
        "at": at,
        "age_s": 1.0,
        "totals": totals,
        "store_up": True,
        "store_reason": "ready",
        "stress": False,
        "open_connections": 9,
        "spool": None,
    }
    return {
        "receivers": [receiver],
        "overall": {
            "top_open": [["192.0.2.8", 9]],
            "windows": {"1m": window},
            "open_connections": 9,
        },
        "clients": {"192.0.2.7": {"blocked": True, "source": "auto"}},
    }


def test_rates_need_two_snapshots_and_ignore_a_repeated_one() -> None:
    view = View()
    view.update(stats(100.0, 0, 0))
    assert view.rates == {}
    view.update(stats(100.0, 0, 0))  # the same snapshot polled again
    assert view.rates == {}
    view.update(stats(105.0, 500, 50))
    assert view.rates == {"accepted": 0.0, "refused": 100.0, "stored": 10.0}
    view.update(stats(105.0, 500, 50))  # polled again before the next one: same rates
    assert view.rates["refused"] == 100.0


def test_rows_and_selection() -> None:
    rows = top_clients(stats(1.0, 0, 0))
    # Refused first, then those opening connections fast (never refused, no mail).
    assert [r["client"] for r in rows] == ["192.0.2.7", "192.0.2.8", "192.0.2.10", "192.0.2.9"]
    assert rows[0]["state"]["blocked"] and rows[1]["open"] == 9
    assert rows[2]["connections"] == 60
    assert [r["why"] for r in rows] == ["blocked", "", "", ""]  # its main reason
    view = View()
    view.update(stats(1.0, 0, 0))
    view.move(-1)
    assert view.chosen is not None and view.chosen["client"] == "192.0.2.9"


class _Away:
    """A client whose API is away (or refuses the token)."""

    def __init__(self, away: bool = True) -> None:
        self.away = away

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        raise ApiError("cannot reach the API at http://127.0.0.1:1/: refused", away=self.away)


def test_a_failed_poll_keeps_the_last_snapshot_and_says_since_when() -> None:
    view = View()
    view.update(stats(100.0, 0, 0))
    view.update(stats(105.0, 500, 50))
    poll(_Away(), view)  # type: ignore[arg-type]
    assert view.stats["receivers"][0]["receiver"] == "mx1" and view.rows  # still shown
    assert view.rates["refused"] == 100.0
    assert view.outage.startswith("API unreachable since ")
    assert "showing the last snapshot; retrying" in view.outage
    first = view.outage
    poll(_Away(), view)  # type: ignore[arg-type]
    assert view.outage == first  # since the first failure, not the latest
    view.update(stats(110.0, 500, 50))
    assert view.outage == ""
    with pytest.raises(ApiError):  # a refused token ends the command: retrying cannot help
        poll(_Away(away=False), view)  # type: ignore[arg-type]


def test_a_kept_snapshot_from_the_api_says_the_store_is_away_and_adds_no_rate() -> None:
    view = View()
    view.update(stats(100.0, 0, 0))
    view.update(stats(105.0, 500, 50))
    kept = stats(105.0, 500, 50)
    kept["store"] = {"up": False, "read_at": 104.0, "away_since": 106.0, "reason": "refused"}
    view.update(kept)
    assert view.outage.startswith("store away since ") and "(refused)" in view.outage
    assert "showing the statistics read at" in view.outage
    assert view.rates["refused"] == 100.0
    text = _text(render(view))
    assert "store away since" in text and "mx1" in text


def _text(group: Any) -> str:
    from rich.console import Console

    console = Console(width=140, record=True, file=io.StringIO())
    console.print(group)
    return console.export_text()
