"""Showing a run: a live table while it runs, the final tables, and a plot over time."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from flood.stats import Stats


def _live_renderable(stats: Stats) -> Table:
    table = Table(title=f"floodgate flood - {stats.elapsed:5.1f}s", expand=False)
    table.add_column("scenario")
    table.add_column("attempts", justify="right")
    table.add_column("top outcomes")
    for name, s in stats.scenarios.items():
        top = ", ".join(f"{k}: {n}" for k, n in s.outcomes.most_common(4))
        table.add_row(name, str(s.attempts), top)
    legit = stats.legit_summary()
    if legit["sent"]:
        lat = legit["latency_ms"]
        table.caption = (
            f"legit {legit['accepted']}/{legit['sent']} ({legit['success_pct']}%), "
            f"p50 {lat['p50']} ms, p99 {lat['p99']} ms"
        )
    return table


@contextlib.contextmanager
def live_table(stats: Stats, enabled: bool) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    with Live(_live_renderable(stats), refresh_per_second=4, transient=True) as live:
        yield lambda: live.update(_live_renderable(stats))


def scenario_rows(name: str, scenario: dict[str, Any]) -> list[tuple[str, str, str, str, bool]]:
    """One scenario's rows: its outcomes, its total, then its follow-up notes (e.g. "held
    to the end"), the section closing after the last of them so no note reads as the next
    scenario's."""
    attempts = scenario["attempts"]
    rows: list[tuple[str, str, str, str, bool]] = []
    for outcome, count in sorted(scenario["outcomes"].items(), key=lambda kv: -kv[1]):
        share = f"{100 * count / attempts:.1f}%" if attempts else "-"
        rows.append(("" if rows else name, outcome, str(count), share, False))
    rows.append(("" if rows else name, "[b]total[/b]", f"[b]{attempts}[/b]", "", False))
    for note, count in scenario["notes"].items():
        rows.append(("", f"[dim]{note}[/dim]", f"[dim]{count}[/dim]", "", False))
    rows[-1] = (*rows[-1][:4], True)
    return rows


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    table = Table(title=f"floodgate flood against {report['target']}, {report['duration_s']}s")
    table.add_column("scenario")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    for name, scenario in report["scenarios"].items():
        for row in scenario_rows(name, scenario):
            table.add_row(*row[:4], end_section=row[4])
    console.print(table)
    legit = report["legit"]
    if legit["sent"]:
        lat = legit["latency_ms"]
        console.print(
            f"[b]legit: {legit['accepted']}/{legit['sent']} accepted "
            f"({legit['success_pct']}%)[/b], latency p50 {lat['p50']} ms, "
            f"p95 {lat['p95']} ms, p99 {lat['p99']} ms, max {lat['max']} ms"
        )
    bans = report.get("bans") or {}
    if bans.get("checked"):
        banned, removed = bans["banned"], bans["removed"]
        line = f"auto-banned by the target during this run: {len(banned)} of its addresses"
        if banned:
            line += f" ({', '.join(banned[:5])}{', ...' if len(banned) > 5 else ''})"
            line += (
                f"; {removed} removed (--cleanup)"
                if removed
                else "; remove them with --cleanup next time, or `floodgate block rm --source auto`"
            )
        console.print(line)
    elif bans.get("note"):
        console.print(f"[dim]bans: {bans['note']}[/dim]")
    if report["interrupted"]:
        console.print("[yellow]interrupted: partial results[/yellow]")


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = report["timeline"]
    seconds = [row["t"] for row in timeline]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    top.plot(seconds, [r["accepted"] for r in timeline], label="messages accepted (250)")
    top.plot(seconds, [r["refused"] for r in timeline], label="refused (4xx/5xx)")
    top.plot(seconds, [r["legit_ok"] for r in timeline], label="legit accepted")
    top.plot(seconds, [r["legit_failed"] for r in timeline], label="legit failed", color="red")
    top.set_ylabel("per second")
    top.legend(loc="upper right")
    top.set_title(f"floodgate flood against {report['target']}")
    nan = float("nan")
    p50 = [nan if r["legit_p50_ms"] is None else r["legit_p50_ms"] for r in timeline]
    p99 = [nan if r["legit_p99_ms"] is None else r["legit_p99_ms"] for r in timeline]
    bottom.plot(seconds, p50, label="legit p50", marker=".")
    bottom.plot(seconds, p99, label="legit p99", marker=".")
    bottom.set_ylabel("legit latency (ms)")
    bottom.set_xlabel("seconds into the run")
    bottom.legend(loc="upper right")
    legit = report["legit"]
    if legit["sent"]:
        bottom.set_title(f"legit success {legit['success_pct']}% of {legit['sent']}")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
