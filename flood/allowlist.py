"""`--legit-allowlisted`: put the legit senders on the target's allowlist for one run.

The flood tool is a client: it talks to the admin API like any operator would. The
entries carry a TTL a few minutes past the run, so they expire by themselves even if the
run is killed before it removes them.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import httpx

REASON = "floodgate flood: legit senders of one run"
SYNC_WAIT = 1.5  # seconds for every receiver to pick the entries up (change streams)


class AllowlistError(Exception):
    """The API refused or could not be reached; the message says which."""


def read_token(explicit: str | None, path: Path) -> str:
    if explicit:
        return explicit
    try:
        return path.read_text().strip()
    except OSError:
        raise AllowlistError(f"no admin token: pass --admin-token or create {path}") from None


def networks(addresses: list[str]) -> list[str]:
    """One /32 per legit address (exact: nothing else on the machine is spared)."""
    return [f"{address}/32" for address in addresses]


class TemporaryAllowlist:
    """Adds the entries on enter and removes them on exit."""

    def __init__(self, api: str, token: str, cidrs: list[str], ttl: float) -> None:
        self.http = httpx.Client(
            base_url=api.rstrip("/"), timeout=15.0, headers={"Authorization": f"Bearer {token}"}
        )
        self.cidrs = cidrs
        self.ttl = int(ttl)

    def __enter__(self) -> TemporaryAllowlist:
        body = {
            "entries": [{"cidr": c, "reason": REASON, "ttl_seconds": self.ttl} for c in self.cidrs]
        }
        try:
            response = self.http.post("/v1/allowlist/bulk", json=body)
        except httpx.HTTPError as error:
            self.http.close()
            raise AllowlistError(f"cannot reach the API at {self.http.base_url}: {error}") from None
        if response.status_code != 200:
            self.http.close()
            raise AllowlistError(f"the API refused the allowlist entries: {response.text[:200]}")
        time.sleep(SYNC_WAIT)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for cidr in self.cidrs:
                self.http.delete(f"/v1/allowlist/{quote(cidr, safe='')}")
        except httpx.HTTPError:
            pass  # the TTL removes them anyway
        finally:
            self.http.close()
