"""`floodgate wait ADDRESS`: wait for a message and print its one-time code or first link,
for shell scripts (`code=$(floodgate wait signup@mx.test --subject confirm)`).

It calls `GET /v1/mailboxes/{address}/wait` on the API (FLOODGATE_API_LISTEN, or `--api`)
with the read token (FLOODGATE_READ_TOKEN) or, without one, the admin token
(FLOODGATE_ADMIN_TOKEN, else `<data_dir>/admin-token`). Standard output gets the value
alone; standard error says which it is (a code, preferred when the message has one, or a
link) and from which message. Exit status: 0 printed, 1 no matching message within the
timeout, 2 cannot ask (API unreachable, token refused, invalid arguments), 3 the message
came but has neither code nor link (`--json` prints it whole instead, with status 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import quote

from floodgate.block_cli import ApiError, Client, _base_url, _message, _token
from floodgate.settings import Settings

HELP = "wait for a message to a mailbox; print its one-time code (or first link)"
EPILOG = """\
examples:
  code=$(floodgate wait signup@mx.test --subject "confirm" --timeout 60)
  floodgate wait reset@mx.test --from shop.example --json | jq -r .links[0].url
  floodgate wait box@mx.test --after 06j0v2b1qk5gq0h2x3y4z5a6b7   (after that message)
"""
MAX_TIMEOUT = 60.0  # the API's bound on one wait


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "wait",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("address", help="the mailbox, e.g. signup@mx.test")
    parser.add_argument("--subject", help="the Subject contains this (any case)")
    parser.add_argument("--from", dest="sender", help="the From contains this (any case)")
    parser.add_argument("--body", help="the text contains this (any case)")
    parser.add_argument("--has", choices=("link", "code", "any"), help="must have one")
    parser.add_argument("--after", help="a message id: only later messages count")
    parser.add_argument("--since", help="only messages received from this time on count (RFC 3339)")
    parser.add_argument(
        "--timeout", type=_seconds, default=30.0, help="seconds to wait, at most 60 (30)"
    )
    parser.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    parser.add_argument("--api", help="API base URL (default: http://FLOODGATE_API_LISTEN)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_TIMEOUT:g} seconds")
    return value


def pick(answer: dict[str, Any]) -> tuple[str, str] | None:
    """("code", its value) when the message has a code, else ("link", the first link's
    URL), else None: a code is what a sign-up test types in; a link is the fallback."""
    if answer.get("codes"):
        return "code", str(answer["codes"][0]["code"])
    if answer.get("links"):
        return "link", str(answer["links"][0]["url"])
    return None


def run(args: argparse.Namespace, settings: Settings) -> int:
    params = {
        key: value
        for key, value in (
            ("subject", args.subject),
            ("from", args.sender),
            ("body", args.body),
            ("has", args.has),
            ("after", args.after),
            ("since", args.since),
            ("timeout", args.timeout),
        )
        if value is not None
    }
    try:
        token = settings.read_token.get_secret_value() if settings.read_token else _token(settings)
        # The API answers within the timeout; the margin covers the store read and a render.
        client = Client(_base_url(args, settings), token, timeout=args.timeout + 15)
        path = f"/v1/mailboxes/{quote(args.address, safe='@+')}/wait"
        try:
            response = client.call("GET", path, params=params)
        finally:
            client.http.close()
    except ApiError as error:
        print(f"floodgate wait: {error}", file=sys.stderr)
        return 2
    return _report(args, response.status_code, response)


def _report(args: argparse.Namespace, status: int, response: Any) -> int:
    if status == 204:
        print(
            f"floodgate wait: no matching message reached {args.address} within {args.timeout:g} s",
            file=sys.stderr,
        )
        return 1
    if status != 200:
        print(f"floodgate wait: {status}: {_message(response)}", file=sys.stderr)
        return 2
    answer: dict[str, Any] = response.json()
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    message = answer["message"]
    found = pick(answer)
    if found is None:
        print(
            f"floodgate wait: message {message['id']} ({message['subject']!r}) has no "
            "code and no link",
            file=sys.stderr,
        )
        return 3
    kind, value = found
    print(value)
    print(
        f"floodgate wait: {kind} from message {message['id']} ({message['subject']!r})",
        file=sys.stderr,
    )
    return 0
