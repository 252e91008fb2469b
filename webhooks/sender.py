"""One attempt: resolve once, connect to the checked address, POST, read the status.

The whole attempt (resolution, connect, TLS, sending the body, the answer's head) runs
under one deadline. A `2xx` is delivered; anything else is a failure, a `3xx` included:
redirects are never followed (a redirect could send the signed message, or our request,
anywhere, past the destination check). The answer's body is not read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

import httpx

from webhooks import destination

USER_AGENT = "Floodgate-Webhooks/1"


class Outcome(StrEnum):
    """How an attempt ended (closed: the metrics' label values)."""

    DELIVERED = "delivered"
    HTTP_ERROR = "http_error"  # an answer other than 2xx or 3xx
    REDIRECT = "redirect"  # a 3xx: not followed, a failure
    TIMEOUT = "timeout"  # the attempt's deadline passed
    CONNECT_ERROR = "connect_error"  # refused, reset, TLS failed...
    DESTINATION = "destination"  # does not resolve in time, or to a forbidden address


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: Outcome
    status: int | None = None
    error: str | None = None  # one sentence for the operator; None when delivered


def client(max_in_flight: int) -> httpx.AsyncClient:
    """The dispatcher's one HTTP client: no redirects, no proxy or variable from the
    environment, at most `max_in_flight` connections."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=0),
        headers={"User-Agent": USER_AGENT},
    )


async def attempt(
    http: httpx.AsyncClient,
    target: destination.Target,
    headers: dict[str, str],
    body: bytes,
    *,
    within: float,
    dns_timeout: float,
    allow_private: bool,
) -> Attempt:
    """POST `body` to `target` once, within `within` seconds in all; the addresses the name
    resolved to are tried in turn while a connection cannot be made."""
    try:
        async with asyncio.timeout(within):
            addresses = await destination.resolve(target, min(dns_timeout, within), allow_private)
            response = await _post(http, target, addresses, headers, body, within)
    except destination.Refused as error:
        return Attempt(Outcome.DESTINATION, error=str(error))
    except (TimeoutError, httpx.TimeoutException):
        return Attempt(Outcome.TIMEOUT, error=f"no answer within {within:g}s")
    except httpx.HTTPError as error:
        return Attempt(Outcome.CONNECT_ERROR, error=f"{type(error).__name__}: {error}"[:300])
    status = response.status_code
    if 200 <= status < 300:
        return Attempt(Outcome.DELIVERED, status)
    if 300 <= status < 400:
        return Attempt(Outcome.REDIRECT, status, f"answered {status}: redirects are not followed")
    return Attempt(Outcome.HTTP_ERROR, status, f"answered {status}")


async def _post(
    http: httpx.AsyncClient,
    target: destination.Target,
    addresses: list[destination.IpAddress],
    headers: dict[str, str],
    body: bytes,
    within: float,
) -> httpx.Response:
    for index, address in enumerate(addresses):
        request = http.build_request(
            "POST",
            target.pinned_url(address),
            content=body,
            headers={**headers, "Host": target.host_header, "Content-Type": "application/json"},
            # The name the certificate must match, though we connect to an address.
            extensions={"sni_hostname": target.host, "timeout": _timeouts(within)},
        )
        try:
            response = await http.send(request, stream=True)
        except httpx.ConnectError:
            if index == len(addresses) - 1:
                raise
            continue
        await response.aclose()
        return response
    raise httpx.ConnectError("no address to connect to")


def _timeouts(total: float) -> dict[str, float]:
    # httpx's own per-phase timeouts, each at most the whole attempt's (the outer
    # deadline is what bounds the sum).
    return {"connect": total, "read": total, "write": total, "pool": total}
