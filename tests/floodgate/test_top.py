"""`floodgate top`'s view: rates from two snapshots per receiver, rows heaviest first,
selection that wraps. (The whole command runs against real processes in tests/api.)"""

from __future__ import annotations

from typing import Any

from floodgate.top import View, top_clients


def stats(at: float, refused: int, stored: int) -> dict[str, Any]:
    totals = {"accepted": 10, "refused": refused, "stored": stored, "stored_bytes": 0}
    window = {
        "refusals": [["192.0.2.7", 40], ["192.0.2.8", 3]],
        "connections": [["192.0.2.10", 60], ["192.0.2.9", 5]],
        "messages": [["192.0.2.9", 5]],
        "by_reason": {"blocked": [["192.0.2.7", 30]], "per_ip_cap": [["192.0.2.7", 10]]},
    }
    return {
        "receivers": [{"receiver": "mx1", "at": at, "totals": totals}],
        "overall": {"top_open": [["192.0.2.8", 9]], "windows": {"1m": window}},
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
