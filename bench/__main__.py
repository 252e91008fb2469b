"""`python -m bench [suite ...] [--quick] [--out DIR]`: run the suites, write JSON + Markdown.

Suites: throughput, abuse, blocklist, push, webhooks, tls, spool, screen, render, fair,
workers, auth, cost, scale, wait, attacks.
Results of every suite run land in one `latest.json` and `latest.md` under `--out` (default
bench/results). A suite whose result lists `failures` with `enforced` set (a goal it checks
and missed) makes the exit status 1, once every report is written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import (
    abuse,
    attacks,
    auth,
    blocklist,
    cost,
    fair,
    push,
    render,
    scale,
    screen,
    spool,
    throughput,
    tls,
    wait,
    webhooks,
    workers,
)

SUITES: dict[str, ModuleType] = {
    "throughput": throughput,
    "abuse": abuse,
    "blocklist": blocklist,
    "push": push,
    "webhooks": webhooks,
    "tls": tls,
    "spool": spool,
    "screen": screen,
    "render": render,
    "fair": fair,
    "workers": workers,
    "auth": auth,
    "cost": cost,
    "scale": scale,
    "wait": wait,
    "attacks": attacks,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help=f"any of {', '.join(SUITES)} (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    unknown = [name for name in args.suites if name not in SUITES]
    if unknown:
        parser.error(f"unknown suite {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    names = args.suites or list(SUITES)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "suites": {},
    }
    latest = args.out / "latest.json"
    if args.suites and latest.exists():
        # A subset run updates its suites and keeps the others' last results.
        previous = json.loads(latest.read_text())
        if previous.get("quick") == args.quick:
            results["suites"] = {k: v for k, v in previous.get("suites", {}).items() if k in SUITES}
    for name in names:
        module = SUITES[name]
        print(f"bench: running {name}{' (quick)' if args.quick else ''} ...", flush=True)
        started = time.monotonic()
        run: Callable[[bool], dict[str, Any]] = module.run
        result = run(args.quick)
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        results["suites"][name] = result
        render: Callable[[dict[str, Any]], str] = module.markdown
        print(render(result), flush=True)
    sections = []
    for name, module in SUITES.items():
        if name in results["suites"]:
            renderer: Callable[[dict[str, Any]], str] = module.markdown
            elapsed = results["suites"][name].get("elapsed_s")
            sections.append(renderer(results["suites"][name]) + f"\n({name}: {elapsed} s)\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    header = (
        f"# Floodgate benchmarks\n\n{results['date']}, {results['machine']['cpus']} CPUs, "
        f"Python {results['machine']['python']}{', quick run' if args.quick else ''}.\n\n"
    )
    (args.out / "latest.md").write_text(header + "\n".join(sections))
    print(f"bench: results written to {args.out / 'latest.json'} and {args.out / 'latest.md'}")
    missed = [
        f"{name}: {failure}"
        for name in names
        if results["suites"][name].get("enforced")
        for failure in results["suites"][name].get("failures", [])
    ]
    for line in missed:
        print(f"bench: goal missed: {line}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
