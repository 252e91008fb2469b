"""`floodgate block ...` and `floodgate allow ...`: manage the access lists through the
admin API (the same actions and file format for both).

The token comes from FLOODGATE_ADMIN_TOKEN, else `<data_dir>/admin-token` (written by
`floodgate run`). Exit status: 0 done, 1 refused (invalid entry, not found), 2 cannot talk
to the API (not running, bad token).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import re
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from blocklist.entries import Entry, InvalidEntry
from floodgate.settings import Settings, parse_hostport

if TYPE_CHECKING:
    import httpx

BATCH = 1000
TIMEOUT = 30.0
TOP_TIMEOUT = 5.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}

EPILOG = """\
examples:
  floodgate block add 203.0.113.0/24 --reason "spam run" --ttl 1h
  floodgate block add 2001:db8::/48 --reason "botnet"          (permanent)
  floodgate block rm 203.0.113.0/24
  floodgate block rm --source auto                   (every automatic ban, in one call)
  floodgate block rm --source auto --older-than 1h
  floodgate block ls --source auto
  floodgate block check 203.0.113.7
      (exit status 0: not blocked, 1: blocked, 2: the question could not be answered)
  floodgate block import banned.txt --reason "old list" --ttl 30d
      (one address or CIDR per line, optionally followed by a reason; # starts a comment)
"""


ALLOW_EPILOG = """\
examples:
  floodgate allow add 192.0.2.0/24 --reason "example provider outbound pool"
  floodgate allow add 2001:db8:1::/48 --reason "transactional sender" --ttl 30d
  floodgate allow rm 192.0.2.0/24
  floodgate allow ls
  floodgate allow check 192.0.2.10
      (exit status 0: not allowlisted, 1: allowlisted, 2: could not be answered)
  floodgate allow import providers.txt
      (one address or CIDR per line, optionally followed by a note; # starts a comment)
"""


@dataclass(frozen=True)
class Kind:
    """What differs between `floodgate block` and `floodgate allow`."""

    command: str
    path: str
    verdict: str  # "blocked" / "allowed", as the API's check answers
    help: str
    description: str
    epilog: str
    add_help: str
    rm_help: str


BLOCK = Kind(
    "block",
    "/v1/blocklist",
    "blocked",
    "manage the IP blocklist through the admin API: add, rm, ls, check, import",
    "Manage the IP blocklist through the admin API. Every receiver picks changes up from "
    "the store within about a second.",
    EPILOG,
    "ban an address or CIDR (re-adding updates it)",
    "lift a ban (the exact address or CIDR)",
)
ALLOW = Kind(
    "allow",
    "/v1/allowlist",
    "allowed",
    "manage the IP allowlist (never throttled or auto-banned): add, rm, ls, check, import",
    "Manage the IP allowlist through the admin API: allowlisted senders skip the rate "
    "limits and are never auto-banned (a blocklist entry still wins). Adding an entry "
    "lifts the automatic bans it covers. Every receiver picks changes up within a second.",
    ALLOW_EPILOG,
    "allow an address or CIDR (re-adding updates it); --reason is its note",
    "remove an allowlist entry (the exact address or CIDR)",
)
KINDS = {kind.command: kind for kind in (BLOCK, ALLOW)}


class ApiError(Exception):
    """The API refused or could not answer; `away`: it could not (unreachable, or a 5xx),
    so asking again later may work (a refused token will not)."""

    def __init__(self, message: str, status: int = 2, *, away: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.away = away


def parse_duration(text: str) -> int:
    """`90`, `90s`, `15m`, `1h`, `7d`, `2w` → seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 3600, 15m, 1h, 7d")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 1:
        raise argparse.ArgumentTypeError("a TTL must be at least 1 second")
    return int(seconds)


def add_block_parser(sub: Any, kind: Kind = BLOCK) -> None:
    parser = sub.add_parser(
        kind.command,
        help=kind.help,
        description=kind.description,
        epilog=kind.epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--api", help="API base URL (default: http://FLOODGATE_API_LISTEN)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = actions.add_parser("add", help=kind.add_help)
    add.add_argument("cidr")
    add.add_argument("--reason", default="")
    add.add_argument("--ttl", type=parse_duration, help="expire after e.g. 3600, 15m, 1h, 7d")
    add.add_argument(
        "--confirm",
        action="store_true",
        help="yes, this wide prefix (shorter than /8 for IPv4, /32 for IPv6): the API "
        "refuses one without it",
    )

    rm = actions.add_parser("rm", help=kind.rm_help)
    rm.add_argument("cidr", nargs="?", help="the entry (or use --source)")
    rm.add_argument(
        "--source", choices=("manual", "auto"), help="remove every entry from this source"
    )
    rm.add_argument(
        "--older-than", type=parse_duration, default=0, help="with --source: e.g. 1h, 7d"
    )

    ls = actions.add_parser("ls", help="list unexpired entries")
    if kind is BLOCK:
        ls.add_argument("--source", choices=("manual", "auto"))
    ls.add_argument("--json", action="store_true", help="one JSON object per line")

    check = actions.add_parser("check", help=f"is this address {kind.verdict}, by which entry?")
    check.add_argument("ip")

    imp = actions.add_parser("import", help="bulk-add entries from a file ('-' for stdin)")
    imp.add_argument("file")
    imp.add_argument("--reason", default="", help="reason for lines that give none")
    imp.add_argument("--ttl", type=parse_duration)


class Client:
    """The admin API over HTTP. httpx is imported here, when a command talks to the API,
    not with this module: `floodgate` imports it for its command line, and a receiver
    starts without an HTTP client."""

    def __init__(self, base_url: str, token: str, timeout: float = TIMEOUT) -> None:
        import httpx

        actor = f"{getpass.getuser()}@{socket.gethostname()}"[:100]
        self.http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {token}", "X-Floodgate-Actor": actor},
        )

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            message = f"cannot reach the API at {self.http.base_url}: {error}"
            raise ApiError(message, away=True) from None
        if response.status_code == 401:
            raise ApiError("the API refused the admin token (FLOODGATE_ADMIN_TOKEN)")
        if response.status_code >= 500:
            raise ApiError(f"the API failed: {_message(response)}", away=True)
        return response


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text


def _token(settings: Settings) -> str:
    token = settings.admin_token_value()
    if token:
        return token
    path = settings.data_dir / "admin-token"
    try:
        return path.read_text().strip()
    except OSError:
        raise ApiError(f"no admin token: set FLOODGATE_ADMIN_TOKEN or create {path}") from None


def _base_url(args: argparse.Namespace, settings: Settings) -> str:
    if args.api:
        return str(args.api).rstrip("/")
    host, port = parse_hostport(settings.api_listen)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def read_entries(
    stream: TextIO, reason: str, ttl: int | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, entry) for every non-blank, non-comment line."""
    for number, line in enumerate(stream, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        cidr, _, rest = text.partition(" ")
        entry: dict[str, Any] = {"cidr": cidr, "reason": rest.strip() or reason}
        if ttl is not None:
            entry["ttl_seconds"] = ttl
        yield number, entry


def _describe(entry: dict[str, Any]) -> str:
    expires = entry.get("expires_at") or "never"
    return (
        f"{entry['cidr']:<43} {entry['source']:<6} expires {expires:<32} {entry.get('reason', '')}"
    )


def run_block(args: argparse.Namespace, settings: Settings) -> int:
    """`floodgate block ...` or `floodgate allow ...`, by `args.command`."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    kind = KINDS[args.command]
    try:
        client = Client(_base_url(args, settings), _token(settings))
        return _run(client, args, kind)
    except ApiError as error:
        print(f"floodgate {kind.command}: {error}", file=sys.stderr)
        return error.status


def _run(client: Client, args: argparse.Namespace, kind: Kind) -> int:
    if args.action == "add":
        body: dict[str, Any] = {"cidr": args.cidr, "reason": args.reason}
        if args.ttl is not None:
            body["ttl_seconds"] = args.ttl
        if args.confirm:
            body["confirm"] = True
        response = client.call("POST", kind.path, json=body)
        if response.status_code not in (200, 201):
            # The API speaks of its JSON field; here the same consent is a flag.
            message = _message(response).replace('send "confirm": true', "add --confirm")
            raise ApiError(message, 1)
        verb = "added" if response.status_code == 201 else "updated"
        print(f"{verb}: {_describe(response.json())}")
        for lifted in response.json().get("lifted", []):
            print(f"lifted automatic ban: {lifted}")
        return 0
    if args.action == "rm" and args.source is not None:
        if args.cidr is not None:
            raise ApiError("give an entry or --source, not both")
        response = client.call(
            "DELETE", kind.path, params={"source": args.source, "older_than": args.older_than}
        )
        if response.status_code != 200:
            raise ApiError(_message(response), 1)
        print(f"removed {response.json()['removed']} {args.source} entries")
        return 0
    if args.action == "rm":
        if args.cidr is None:
            raise ApiError("rm needs an entry (or --source auto|manual)")
        response = client.call("DELETE", f"{kind.path}/{args.cidr}")
        if response.status_code != 204:
            raise ApiError(_message(response), 1)
        print(f"removed: {args.cidr}")
        return 0
    if args.action == "ls":
        return _list(client, args, kind)
    if args.action == "check":
        response = client.call("GET", f"{kind.path}/check/{args.ip}")
        if response.status_code != 200:
            raise ApiError(_message(response), 2)
        result = response.json()
        if result[kind.verdict]:
            print(f"{args.ip} is {kind.verdict} by {_describe(result['entry'])}")
            return 1  # on the list: scripts can test it (documented in the epilog)
        print(f"{args.ip} is not {kind.verdict}")
        return 0
    if args.action == "import":
        return _import(client, args, kind)
    raise ApiError(f"unknown action {args.action}")


def _list(client: Client, args: argparse.Namespace, kind: Kind) -> int:
    params: dict[str, Any] = {"limit": 1000}
    if getattr(args, "source", None):
        params["source"] = args.source
    count = 0
    while True:
        response = client.call("GET", kind.path, params=params)
        if response.status_code != 200:
            raise ApiError(_message(response), 1)
        page = response.json()
        for entry in page["entries"]:
            print(json.dumps(entry) if args.json else _describe(entry))
            count += 1
        if "next" not in page or page["next"] == params.get("after"):
            break  # the last page (or a server that stopped making progress)
        params["after"] = page["next"]
    if not args.json:
        print(f"{count} entries", file=sys.stderr)
    return 0


def _import(client: Client, args: argparse.Namespace, kind: Kind) -> int:
    stream = sys.stdin if args.file == "-" else Path(args.file).open(encoding="utf-8")
    with stream:
        lines = list(read_entries(stream, args.reason, args.ttl))
    # Check every line before sending any: a bad line 9,000 must not leave a half import.
    problems = []
    for number, entry in lines:
        try:
            Entry.new(entry["cidr"], reason=entry["reason"], ttl_seconds=entry.get("ttl_seconds"))
        except InvalidEntry as error:
            problems.append(f"line {number}: {error}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        print(
            f"floodgate {kind.command} import: nothing imported:\n  {shown}{more}",
            file=sys.stderr,
        )
        return 1
    added = updated = 0
    for start in range(0, len(lines), BATCH):
        batch = lines[start : start + BATCH]
        response = client.call(
            "POST", f"{kind.path}/bulk", json={"entries": [entry for _, entry in batch]}
        )
        if response.status_code != 200:
            print(
                f"floodgate {kind.command} import: {_message(response)}\n"
                f"({added + updated} entries before line {batch[0][0]} were imported)",
                file=sys.stderr,
            )
            return 1
        result = response.json()
        added += result["added"]
        updated += result["updated"]
    print(f"imported {len(lines)} entries: {added} added, {updated} updated")
    return 0


def run_top(args: argparse.Namespace, settings: Settings) -> int:
    """`floodgate top`: the live view, with this module's client and token handling."""
    from floodgate import top

    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.interval <= 0 or args.interval > 60:
        print("floodgate top: --interval must be in (0, 60] seconds", file=sys.stderr)
        return 2
    try:
        # A poll waits no longer than this: the API answers within 2.5 s even with the
        # store away, and a hung API must not freeze the keys.
        client = Client(_base_url(args, settings), _token(settings), timeout=TOP_TIMEOUT)
        return top.run(client, args.interval, args.once)
    except ApiError as error:
        print(f"floodgate top: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        return 0
