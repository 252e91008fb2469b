"""`floodgate flood`: replay the incidents against an MX and report what legit senders saw."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import resource
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from flood import scenarios
from flood.allowlist import AllowlistError, TemporaryAllowlist, networks, read_token
from flood.bans import our_bans
from flood.report import live_table, plot, print_report
from flood.scenarios import Sources, Target
from flood.stats import Stats

MAX_DURATION = 3600.0
LEGIT_FIRST = "127.0.40.1"

EPILOG = """\
scenarios (combine any of them in one run; each has its own knobs):
  idle       open N sockets spread over K source IPs and stay silent (the incident)
               floodgate flood --idle 2000 --idle-ips 20
  slowloris  trickle one byte per interval inside a command or inside DATA
               floodgate flood --slowloris 50 --slowloris-interval 1 --slowloris-phase data
  connect    connection churn: connect, read the greeting, QUIT, as fast as allowed
               floodgate flood --connect 20 --connect-ips 2
  messages   message flood on persistent connections from a few IPs (default 4)
               floodgate flood --messages 8 --messages-ips 4 --messages-size 1024
  tls        STARTTLS handshake flood: connect, EHLO, STARTTLS, full handshake, QUIT
               floodgate flood --tls-handshakes 16 --tls-ips 4
  legit      well-behaved senders from other IPs, one connection per message; their
             success rate and latency (p50/p95/p99) are the headline of the report
               floodgate flood --legit 5 --legit-ips 10 [--legit-tls]

presets:
  --preset incident   3,000 idle sockets from 30 IPs, a 4-IP message flood, 10 slowloris
                      connections and a legit stream of 5 messages/s from 10 IPs,
                      for {incident:.0f} s (past the default 60 s idle timeout, so the
                      deadlines are seen cutting the idle and slowloris sockets); writes
                      var/flood-<time>.png

after the run, with the admin token (--admin-token, or var/admin-token), the report says
how many of the run's addresses the target auto-banned; --cleanup removes exactly those.

examples:
  floodgate flood --preset incident --require-legit 100
  floodgate flood --idle 500 --legit 5 --duration 20 --json out.json --plot out.png

Client IPs are loopback addresses (127.0.10.x idle, 127.0.20.x slowloris, 127.0.30.x
connect, 127.0.31.x messages, 127.0.32.x tls, 127.0.40.x legit): on Linux the whole
127.0.0.0/8 answers without configuration. The tool raises its own open-files limit to
the hard limit; if that is too low for --idle, raise it with `ulimit -n` first. Targets
outside loopback are refused unless --allow-remote is given. Every run ends at --duration;
Ctrl-C stops early and still reports. Exit status: 0, 1 when legit success is below
--require-legit, 2 on bad usage, 130 when interrupted.
"""

PRESETS: dict[str, dict[str, Any]] = {
    "incident": {
        "idle": 3000,
        "idle_ips": 30,
        "messages": 8,
        "messages_ips": 4,
        "slowloris": 10,
        "slowloris_ips": 2,
        "slowloris_phase": "data",
        "legit": 5.0,
        "legit_ips": 10,
        # Past the receiver's default 60 s idle timeout, so the slowloris connections are
        # seen being cut (FLOODGATE_IDLE_TIMEOUT; a shorter one shows it sooner).
        "duration": 75.0,
    }
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="floodgate flood",
        description="Load and attack generator for an SMTP receiver: replays the incidents "
        "and reports whether legitimate mail still got through, and how fast.",
        epilog=EPILOG.format(incident=PRESETS["incident"]["duration"]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", default="127.0.0.1:2525", help="HOST:PORT (default %(default)s)")
    p.add_argument("--domain", default="mx.test", help="recipient domain (default %(default)s)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback target")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a ready-made mix (see below)")
    p.add_argument(
        "--duration",
        type=float,
        help=f"seconds (default 10; incident preset {PRESETS['incident']['duration']:.0f})",
    )
    p.add_argument("--timeout", type=float, default=15.0, help="per reply, seconds")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="write a PNG over time")
    p.add_argument("--require-legit", type=float, metavar="PCT", help="exit 1 below this %%")
    p.add_argument("--quiet", action="store_true", help="no live display")

    g = p.add_argument_group("idle")
    g.add_argument("--idle", type=int, default=0, metavar="N", help="sockets to hold")
    g.add_argument("--idle-ips", type=int, default=30, metavar="K")
    g.add_argument("--idle-rate", type=float, default=1000.0, help="new sockets per second")
    g = p.add_argument_group("slowloris")
    g.add_argument("--slowloris", type=int, default=0, metavar="N", help="connections")
    g.add_argument("--slowloris-ips", type=int, default=2)
    g.add_argument("--slowloris-interval", type=float, default=1.0, help="seconds per byte")
    g.add_argument("--slowloris-phase", choices=("command", "data"), default="data")
    g = p.add_argument_group("connect")
    g.add_argument("--connect", type=int, default=0, metavar="WORKERS", help="concurrent")
    g.add_argument("--connect-ips", type=int, default=2)
    g.add_argument("--connect-rate", type=float, default=0.0, help="per second, 0 = max")
    g.add_argument("--connect-max", type=int, default=1_000_000, help="connections in all")
    g = p.add_argument_group("messages")
    g.add_argument("--messages", type=int, default=0, metavar="WORKERS", help="concurrent")
    g.add_argument("--messages-ips", type=int, default=4)
    g.add_argument("--messages-size", type=int, default=1024, help="bytes per message")
    g.add_argument("--messages-max", type=int, default=1_000_000, help="messages in all")
    g = p.add_argument_group("tls")
    g.add_argument("--tls-handshakes", type=int, default=0, metavar="WORKERS", help="concurrent")
    g.add_argument("--tls-ips", type=int, default=4)
    g.add_argument("--tls-max", type=int, default=1_000_000, help="handshakes in all")
    g = p.add_argument_group("legit")
    g.add_argument("--legit", type=float, default=0.0, metavar="RATE", help="messages/s")
    g.add_argument("--legit-ips", type=int, default=10)
    g.add_argument("--legit-size", type=int, default=2048, help="bytes per message")
    g.add_argument("--legit-max", type=int, default=100_000, help="messages in all")
    g.add_argument(
        "--legit-tls", action="store_true", help="legit senders use STARTTLS when offered"
    )
    g.add_argument(
        "--legit-allowlisted",
        action="store_true",
        help="put the legit senders on the target's allowlist for this run (admin API)",
    )
    g = p.add_argument_group("bans (through the admin API)")
    g.add_argument(
        "--cleanup",
        action="store_true",
        help="at the end, remove the automatic bans this run caused (and only those)",
    )
    g.add_argument(
        "--api", default="http://127.0.0.1:8025", help="admin API (allowlist, ban report)"
    )
    g.add_argument("--admin-token", help="bearer token (default: read --admin-token-file)")
    g.add_argument("--admin-token-file", type=Path, default=Path("var/admin-token"))
    return p


class UsageError(Exception):
    pass


def resolve_target(text: str, allow_remote: bool) -> tuple[str, int, bool]:
    """(host, port, is_loopback); never resolves a name unless remote targets are allowed."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"--target {text!r}: expected HOST:PORT")
    host = host.strip("[]")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
        if not allow_remote:
            raise UsageError(
                f"--target {host!r} is not a loopback address (names are not resolved); "
                "pass --allow-remote to flood another host"
            ) from None
    if not loopback and not allow_remote:
        raise UsageError(
            f"--target {host} is outside loopback (127.0.0.0/8, ::1); "
            "pass --allow-remote if you really mean to flood it"
        )
    return host, int(port_text), loopback


def raise_fd_limit(needed: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft, needed


def apply_preset(args: argparse.Namespace, argv: list[str]) -> None:
    if not args.preset:
        return
    given = {a.split("=", 1)[0].lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
    for key, value in PRESETS[args.preset].items():
        if key not in given:
            setattr(args, key, value)
    if args.plot is None and "plot" not in given:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        args.plot = Path("var") / f"flood-{stamp}.png"


def validate(args: argparse.Namespace) -> None:
    if args.duration is None:
        args.duration = 10.0
    if not 0 < args.duration <= MAX_DURATION:
        raise UsageError(f"--duration must be in (0, {MAX_DURATION:.0f}] seconds")
    if not 0 < args.timeout <= 300:
        raise UsageError("--timeout must be in (0, 300] seconds")
    for name in ("idle", "slowloris", "connect", "messages", "tls_handshakes"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name} must not be negative")
    for name in (
        "idle_ips",
        "slowloris_ips",
        "connect_ips",
        "messages_ips",
        "legit_ips",
        "tls_ips",
    ):
        if not 1 <= getattr(args, name) <= 250:
            raise UsageError(f"--{name.replace('_', '-')} must be between 1 and 250")
    if args.legit < 0 or args.legit > 10_000:
        raise UsageError("--legit must be between 0 and 10000 messages/s")
    if not 64 <= args.messages_size <= 50_000_000 or not 64 <= args.legit_size <= 50_000_000:
        raise UsageError("message sizes must be between 64 bytes and 50 MB")
    if args.require_legit is not None and not 0 <= args.require_legit <= 100:
        raise UsageError("--require-legit is a percentage (0-100)")
    if args.slowloris_interval <= 0:
        raise UsageError("--slowloris-interval must be positive")
    if not active_scenarios(args):
        raise UsageError("nothing to do: give at least one scenario or --preset (see --help)")
    if args.legit_allowlisted and not args.legit:
        raise UsageError("--legit-allowlisted needs a legit stream (--legit RATE)")
    if args.require_legit is not None and not args.legit:
        raise UsageError("--require-legit needs a legit stream (--legit RATE)")


SCENARIOS = {
    "idle": "idle",
    "slowloris": "slowloris",
    "connect": "connect",
    "messages": "messages",
    "tls_handshakes": "tls",
    "legit": "legit",
}


def active_scenarios(args: argparse.Namespace) -> list[str]:
    return [name for option, name in SCENARIOS.items() if getattr(args, option)]


def jobs(
    args: argparse.Namespace, target: Target, stats: Stats, stop: asyncio.Event
) -> list[Coroutine[Any, Any, None]]:
    out: list[Coroutine[Any, Any, None]] = []
    if args.idle:
        out.append(
            scenarios.idle(
                target,
                stats,
                stop,
                args.idle,
                Sources("127.0.10.1", args.idle_ips),
                args.idle_rate,
            )
        )
    if args.slowloris:
        out.append(
            scenarios.slowloris(
                target,
                stats,
                stop,
                args.slowloris,
                Sources("127.0.20.1", args.slowloris_ips),
                args.slowloris_interval,
                args.slowloris_phase,
            )
        )
    if args.connect:
        out.append(
            scenarios.connect(
                target,
                stats,
                stop,
                args.connect,
                Sources("127.0.30.1", args.connect_ips),
                args.connect_rate,
                args.connect_max,
            )
        )
    if args.messages:
        out.append(
            scenarios.messages(
                target,
                stats,
                stop,
                args.messages,
                Sources("127.0.31.1", args.messages_ips),
                args.messages_size,
                args.messages_max,
            )
        )
    if args.legit:
        out.append(
            scenarios.legit(
                target,
                stats,
                stop,
                args.legit,
                Sources(LEGIT_FIRST, args.legit_ips),
                args.legit_size,
                args.legit_max,
                tls=args.legit_tls,
            )
        )
    if args.tls_handshakes:
        out.append(
            scenarios.tls_handshakes(
                target,
                stats,
                stop,
                args.tls_handshakes,
                Sources("127.0.32.1", args.tls_ips),
                args.tls_max,
            )
        )
    return out


async def run(args: argparse.Namespace, target: Target, stats: Stats) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        stats.interrupted = True
        stop.set()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupt)
        loop.add_signal_handler(signal.SIGTERM, interrupt)
    loop.call_later(args.duration, stop.set)
    work = asyncio.gather(*jobs(args, target, stats, stop))
    with live_table(stats, enabled=not args.quiet and sys.stdout.isatty()) as refresh:
        while not work.done():
            await asyncio.wait({work}, timeout=0.5)
            refresh()
    await work  # re-raise a scenario's unexpected error, if any
    stats.finished = time.monotonic()


def allowlisted(args: argparse.Namespace) -> contextlib.AbstractContextManager[object]:
    """The legit senders on the allowlist for the run, when asked; else nothing."""
    if not (args.legit_allowlisted and args.legit):
        return contextlib.nullcontext()
    token = read_token(args.admin_token, args.admin_token_file)
    cidrs = networks(Sources(LEGIT_FIRST, args.legit_ips).addresses())
    return TemporaryAllowlist(args.api, token, cidrs, ttl=args.duration + 300)


def source_addresses(args: argparse.Namespace) -> list[str]:
    """Every client address this run used."""
    groups = [
        ("idle", "127.0.10.1", args.idle_ips),
        ("slowloris", "127.0.20.1", args.slowloris_ips),
        ("connect", "127.0.30.1", args.connect_ips),
        ("messages", "127.0.31.1", args.messages_ips),
        ("tls_handshakes", "127.0.32.1", args.tls_ips),
        ("legit", LEGIT_FIRST, args.legit_ips),
    ]
    return [
        a for name, first, n in groups if getattr(args, name) for a in Sources(first, n).addresses()
    ]


def ban_report(args: argparse.Namespace, started: float, loopback: bool) -> dict[str, Any]:
    """How many of this run's addresses the target auto-banned (needs the admin API)."""
    try:
        token = read_token(args.admin_token, args.admin_token_file)
    except AllowlistError as error:
        if args.cleanup:
            return {"checked": False, "note": f"--cleanup: {error}"}
        return {"checked": False, "note": "no admin token: bans not checked"}
    if not loopback:
        return {"checked": False, "note": "remote target: bans not checked"}
    found = our_bans(args.api, token, source_addresses(args), started, args.cleanup)
    if found.error is not None:
        return {"checked": False, "note": found.error}
    return {"checked": True, "banned": found.banned, "removed": found.removed}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        apply_preset(args, argv)
        validate(args)
        host, port, loopback = resolve_target(args.target, args.allow_remote)
    except UsageError as error:
        parser.print_usage(sys.stderr)
        print(f"floodgate flood: error: {error}", file=sys.stderr)
        return 2
    sockets = args.idle + args.slowloris + args.connect + args.messages + 200
    soft, needed = raise_fd_limit(sockets)
    if soft < needed:
        print(
            f"floodgate flood: note: open-files limit {soft} is below the ~{needed} sockets "
            "this run may hold; excess connections will fail (raise it with `ulimit -n`)",
            file=sys.stderr,
        )
    target = Target(host, port, args.domain, args.timeout, bind_sources=loopback)
    stats = Stats(active_scenarios(args))
    started = time.time()
    try:
        with allowlisted(args):
            asyncio.run(run(args, target, stats))
    except AllowlistError as error:
        print(f"floodgate flood: --legit-allowlisted: {error}", file=sys.stderr)
        return 2

    settings = {
        key: getattr(args, key)
        for key in sorted(vars(args))
        if key not in ("json", "plot") and getattr(args, key) is not None
    }
    report = stats.to_json(f"{host}:{port}", settings)
    report["bans"] = ban_report(args, started, loopback)
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"JSON report written to {args.json}")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(report, args.plot)
        print(f"plot written to {args.plot}")
    if stats.interrupted:
        return 130
    success = report["legit"]["success_pct"]
    if args.require_legit is not None and (success is None or success < args.require_legit):
        print(
            f"floodgate flood: legit success {success}% is below the required "
            f"{args.require_legit}%",
            file=sys.stderr,
        )
        return 1
    return 0
