"""The `floodgate` command line."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from floodgate.block_cli import ALLOW, BLOCK, add_block_parser
from floodgate.spool_cli import add_parser as add_spool_parser
from floodgate.top import add_parser as add_top_parser
from floodgate.wait_cli import add_parser as add_wait_parser

if TYPE_CHECKING:
    from floodgate.settings import Settings

DESCRIPTION = """Floodgate: an abuse-resistant inbound SMTP receiver (MX) for disposable mail.
Settings come from FLOODGATE_* environment variables (see README)."""

COMMANDS = {
    "run": "all-in-one: embedded store (unless FLOODGATE_MONGODB_URI is set), receiver and "
    "API, each as its own supervised process; prints the admin token and how to send mail",
    "receiver": "the SMTP receiver alone (needs FLOODGATE_MONGODB_URI); production runs one "
    "per MX host",
    "api": "the HTTP API alone (needs FLOODGATE_MONGODB_URI and FLOODGATE_ADMIN_TOKEN or "
    "<data_dir>/admin-token): mailbox reads, blocklist admin, health, metrics",
    "flood": "the bundled load and attack generator (loopback only unless --allow-remote); "
    "`floodgate flood --help` for scenarios",
    "block": "manage the IP blocklist through the admin API: add, rm, ls, check, import",
    "allow": "manage the IP allowlist through the admin API: add, rm, ls, check, import",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="floodgate", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        if name in ("block", "allow"):
            continue
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == "receiver":
            command.add_argument(
                "--workers",
                type=_workers,
                metavar="N",
                help="worker processes behind one gate (default FLOODGATE_WORKERS, 1)",
            )
    add_block_parser(sub, BLOCK)
    add_block_parser(sub, ALLOW)
    add_top_parser(sub)
    add_spool_parser(sub)
    add_wait_parser(sub)
    return parser


def _workers(text: str) -> int:
    """`--workers N`: the same range as FLOODGATE_WORKERS."""
    from floodgate.settings import Settings

    field = Settings.model_fields["workers"]
    low, high = 1, 64
    for bound in field.metadata:
        low = getattr(bound, "ge", low)
        high = getattr(bound, "le", high)
    if not text.isdigit() or not low <= int(text) <= high:
        raise argparse.ArgumentTypeError(f"must be a number from {low} to {high}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["flood"]:
        return _flood(args_list[1:])
    args = build_parser().parse_args(args_list)
    settings = _settings()
    if settings is None:
        return 2
    from floodgate.logs import configure

    configure(settings.log_level, settings.log_summary_interval, settings.log_format)
    return _dispatch(args, settings)


def _settings() -> Settings | None:
    """The settings, or None once every problem with them is printed (exit 2)."""
    from floodgate import settings as settings_module

    try:
        return settings_module.load()
    except settings_module.SettingsError as error:
        for problem in error.problems:
            print(f"floodgate: {problem}", file=sys.stderr)
        return None


def _flood(argv: list[str]) -> int:
    """`floodgate flood`: the bundled tool (which imports nothing of ours), aimed by
    default at this checkout's receiver and API where the settings put them, as
    `make run` started them: FLOODGATE_SMTP_LISTEN, FLOODGATE_API_LISTEN, the first of
    FLOODGATE_DOMAINS, <FLOODGATE_DATA_DIR>/admin-token. An option given wins (argparse
    keeps the last of each); `--help` needs no settings."""
    from flood.cli import main as flood_main

    if {"-h", "--help"} & set(argv):
        return flood_main(argv)
    settings = _settings()
    if settings is None:
        return 2
    defaults = [
        "--target",
        _reachable(settings.smtp_listen),
        "--api",
        f"http://{_reachable(settings.api_listen)}",
        "--domain",
        settings.domains.split(",")[0],
        "--admin-token-file",
        str(settings.data_dir / "admin-token"),
    ]
    return flood_main([*defaults, *argv])


def _reachable(listen: str) -> str:
    """Where a client reaches a listener: a wildcard address (every address of the host)
    is reached on loopback."""
    from floodgate.settings import listen_address

    host, port = listen_address(listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _dispatch(args: argparse.Namespace, settings: object) -> int:
    from floodgate.settings import Settings

    assert isinstance(settings, Settings)
    if args.command == "run":
        from floodgate import supervisor

        return supervisor.main(settings)
    if args.command == "receiver":
        from floodgate import receiver_app

        if args.workers is not None:
            settings = settings.model_copy(update={"workers": args.workers})
        receiver_app.main(settings)
        return 0
    if args.command == "api":
        from floodgate import api_app
        from floodgate.supervisor import admin_token

        if not settings.admin_token_value() and not (settings.data_dir / "admin-token").exists():
            print("floodgate api: set FLOODGATE_ADMIN_TOKEN", file=sys.stderr)
            return 2
        api_app.main(settings, admin_token(settings)[0])
        return 0
    if args.command in ("block", "allow"):
        from floodgate.block_cli import run_block

        return run_block(args, settings)
    if args.command == "top":
        from floodgate.block_cli import run_top

        return run_top(args, settings)
    if args.command == "spool":
        from floodgate.spool_cli import run

        return run(args, settings)
    if args.command == "wait":
        from floodgate import wait_cli

        return wait_cli.run(args, settings)
    return 2
