"""`floodgate webhook add|list|remove|deliveries`: manage webhooks through the admin API.

The token and the API's address come as for `floodgate block` (FLOODGATE_ADMIN_TOKEN, else
`<data_dir>/admin-token`; `--api`, else FLOODGATE_API_LISTEN). Exit status: 0 done,
1 refused (invalid URL, unknown webhook), 2 cannot talk to the API.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from floodgate.block_cli import ApiError, Client, _base_url, _message, _token
from floodgate.settings import Settings

HELP = "webhooks: POST each new message, signed, to a URL (add, list, remove, deliveries)"
EPILOG = """\
examples:
  floodgate webhook add https://ci.example/hooks/mail --match signup@mx.test
  floodgate webhook add https://ci.example/hooks/all              (every message)
  floodgate webhook list
  floodgate webhook deliveries wh_0123456789abcdef
  floodgate webhook enable wh_0123456789abcdef                    (after it was disabled)
  floodgate webhook remove wh_0123456789abcdef
The secret (whsec_...) is printed once, by add: keep it to verify the signatures.
"""
PATH = "/v1/webhooks"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "webhook",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--api", help="API base URL (default: http://FLOODGATE_API_LISTEN)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON answers")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="register a URL; prints its secret, once")
    add.add_argument("url")
    add.add_argument("--match", help="an address or a domain (default: every message)")
    actions.add_parser("list", help="every webhook with its health")
    for name, text in (
        ("remove", "remove a webhook and its deliveries"),
        ("enable", "enable a disabled webhook again"),
        ("deliveries", "a webhook's recent deliveries"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("id")
        if name == "deliveries":
            action.add_argument("--limit", type=int, default=50)


def run(args: argparse.Namespace, settings: Settings) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        client = Client(_base_url(args, settings), _token(settings))
    except ApiError as error:
        print(f"floodgate webhook: {error}", file=sys.stderr)
        return error.status
    try:
        return _run(client, args)
    except ApiError as error:
        print(f"floodgate webhook: {error}", file=sys.stderr)
        return error.status
    finally:
        client.http.close()


def _run(client: Client, args: argparse.Namespace) -> int:
    if args.action == "add":
        body: dict[str, Any] = {"url": args.url}
        if args.match:
            body["match"] = args.match
        answer = _answer(client.call("POST", PATH, json=body), 201)
        if not args.json:
            print(f"added: {_describe(answer)}")
            print(f"secret: {answer['secret']}  (shown once: keep it to verify signatures)")
    elif args.action == "list":
        answer = _answer(client.call("GET", PATH), 200)
        if not args.json:
            for webhook in answer["webhooks"]:
                print(_describe(webhook))
            print(f"{len(answer['webhooks'])} webhooks", file=sys.stderr)
    elif args.action == "remove":
        _answer(client.call("DELETE", f"{PATH}/{args.id}"), 204)
        answer = None
        print(f"removed: {args.id}")
    elif args.action == "enable":
        answer = _answer(client.call("POST", f"{PATH}/{args.id}/enable"), 200)
        if not args.json:
            print(f"enabled: {_describe(answer)}")
    else:
        params = {"limit": args.limit}
        answer = _answer(client.call("GET", f"{PATH}/{args.id}/deliveries", params=params), 200)
        if not args.json:
            for delivery in answer["deliveries"]:
                print(_delivery(delivery))
    if args.json and answer is not None:
        print(json.dumps(answer, indent=1))
    return 0


def _answer(response: Any, status: int) -> Any:
    if response.status_code != status:
        raise ApiError(_message(response), 1)
    return response.json() if status != 204 else None


def _describe(webhook: dict[str, Any]) -> str:
    state = "DISABLED " + str(webhook.get("disabled_reason")) if webhook["disabled"] else "on"
    match = webhook.get("match") or "(every message)"
    failing = f" failures={webhook['failures']}" if webhook.get("failures") else ""
    return f"{webhook['id']}  {match:<30} {webhook['url']}  {state}{failing}"


def _delivery(delivery: dict[str, Any]) -> str:
    status = delivery.get("last_status") or "-"
    error = delivery.get("last_error") or ""
    return (
        f"{delivery['created_at']}  {delivery['message_id']}  {delivery['state']:<9} "
        f"attempts={delivery['attempts']} status={status} {error}"
    ).rstrip()
