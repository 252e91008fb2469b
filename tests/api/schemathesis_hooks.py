"""Values of the API's named formats, for the contract tests (schemathesis hooks).

The OpenAPI document names a format where a regular expression cannot say what is valid
(a CIDR without host bits, an IP address, a mailbox); these strategies generate valid
values, so a request the schema calls valid is one the API must accept. Message ids are
drawn half the time from the messages the test seeded (`CONTRACT_SEEDED`, JSON), so the
message routes render, extract and serve real (and hostile) mail rather than answer 404.
A DELETE gets the seeded twin of the id it drew (each message is seeded twice), so
deleting never starves the reads; an attachment index for a seeded message is one that
mostly exists.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import string
from typing import Any

import schemathesis
from hypothesis import strategies as st

V4 = st.builds(
    lambda value, prefix: str(ipaddress.ip_network((value, prefix), strict=False)),
    st.integers(0, 2**32 - 1),
    st.integers(8, 32),  # shorter prefixes need "confirm": true
)
V6 = st.builds(
    lambda value, prefix: str(
        ipaddress.ip_network(((0x2001_0DB8 << 96) | value, prefix), strict=False)
    ),
    st.integers(0, 2**96 - 1),
    st.integers(32, 128),
)
ADDRESS = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v))),
    st.integers(0, 2**96 - 1).map(lambda v: str(ipaddress.IPv6Address((0x2001_0DB8 << 96) | v))),
)
# Built from plain text strategies, not `st.from_regex`: the coverage phase asks each format
# for values of a field's boundary lengths (a mailbox of 320 characters, a URL of 2,048),
# which these formats never reach, and learns that only once a draw budget is spent; a
# regular-expression draw cost that budget several times over (most of the run's minutes).
ALNUM = string.ascii_lowercase + string.digits
DOMAINS = st.sampled_from(["mx.test", "example.test"])
# [a-z0-9]([a-z0-9.+_-]{0,30}[a-z0-9])?@(mx|example).test, never two dots in a row
MAILBOX = st.builds(
    lambda first, middle, last, domain: (
        re.sub(r"\.\.+", ".", first + middle + last) + "@" + domain if last else f"{first}@{domain}"
    ),
    st.sampled_from(ALNUM),
    st.text(alphabet=ALNUM + ".+_-", max_size=30),
    st.sampled_from(["", *ALNUM]),
    DOMAINS,
)
MESSAGE_ID = st.text(alphabet="0123456789abcdefghjkmnpqrstvwxyz", min_size=26, max_size=26)
# Webhook URLs the API must accept: http(s), a host name (never a private literal, refused
# by design), a port, a path; and what an endpoint matches: an address or a domain.
WEBHOOK_URL = st.builds(
    lambda scheme, host, port, path: (
        f"{scheme}://{host}.example{port}" + "".join("/" + p for p in path)
    ),
    st.sampled_from(["http", "https"]),
    st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=12),
    st.one_of(st.just(""), st.integers(1, 9999).map(lambda n: f":{n}")),
    st.lists(st.text(alphabet=ALNUM + "._~-", max_size=20), max_size=3),
)
SUBDOMAINS = st.lists(st.text(alphabet=ALNUM, min_size=1, max_size=10), max_size=2)
WEBHOOK_MATCH = st.one_of(
    MAILBOX, st.builds(lambda labels, domain: ".".join([*labels, domain]), SUBDOMAINS, DOMAINS)
)
WEBHOOK_ID = st.text(alphabet="0123456789abcdef", min_size=16, max_size=16).map("wh_".__add__)
SEEDED = json.loads(os.environ.get("CONTRACT_SEEDED", '{"ids": [], "mailboxes": [], "twins": {}}'))


def seeded_or(values: list[str], other: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(values), other) if values else other


schemathesis.openapi.format("cidr", st.one_of(V4, V6, ADDRESS))
schemathesis.openapi.format("ip", ADDRESS)
schemathesis.openapi.format("mailbox", MAILBOX)
schemathesis.openapi.format("message-id", seeded_or(SEEDED["ids"], MESSAGE_ID))
schemathesis.openapi.format("webhook-url", WEBHOOK_URL)
schemathesis.openapi.format("webhook-match", WEBHOOK_MATCH)
schemathesis.openapi.format("webhook-id", WEBHOOK_ID)


@schemathesis.hook
def map_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A DELETE gets the twin of a seeded id; an attachment index for a seeded message is
    0-2 (seeded messages have few attachments)."""
    operation = context.operation
    if not path_parameters or operation is None:
        return path_parameters
    if operation.method.upper() == "DELETE":
        twins: dict[str, str] = SEEDED["twins"]
        return {name: twins.get(value, value) for name, value in path_parameters.items()}
    index = path_parameters.get("index")
    if isinstance(index, int) and path_parameters.get("message_id") in SEEDED["twins"]:
        return {**path_parameters, "index": index % 3}
    return path_parameters


WAIT_SECONDS = 0.2  # a generated wait is a short one: the contract, not the clock, is tested


@schemathesis.hook
def map_query(context: schemathesis.HookContext, query: dict[str, Any] | None) -> Any:
    """`GET .../wait` waits at most `WAIT_SECONDS` (by default it would wait 30 s for a
    message that never comes): a valid `timeout` is shortened, a missing one is given;
    an invalid one is left as drawn, for the API to refuse."""
    operation = context.operation
    if operation is None or not operation.path.endswith("/wait"):
        return query
    query = dict(query or {})
    value = query.get("timeout")
    if value is None:
        query["timeout"] = WAIT_SECONDS
    elif isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 60:
        query["timeout"] = min(value, WAIT_SECONDS)
    return query
