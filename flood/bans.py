"""After a run: which of the tool's own source addresses the target auto-banned, and
(`--cleanup`) removing exactly those bans, through the admin API like any operator.

"Exactly those": automatic entries for one of this run's addresses, created after the
run started. Bans of other addresses, manual entries and earlier bans are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

import httpx

PAGE = 1000
MAX_PAGES = 100  # bounded: at most 100,000 automatic entries examined


@dataclass(frozen=True)
class BanReport:
    banned: list[str]  # this run's addresses (as /32 entries) banned during the run
    removed: int
    error: str | None = None


def our_bans(api: str, token: str, addresses: list[str], since: float, cleanup: bool) -> BanReport:
    ours = {f"{address}/32" for address in addresses}
    try:
        with httpx.Client(
            base_url=api.rstrip("/"), timeout=15.0, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            banned = []
            after: str | None = None
            for _ in range(MAX_PAGES):
                params: dict[str, str | int] = {"source": "auto", "limit": PAGE}
                if after is not None:
                    params["after"] = after
                response = http.get("/v1/blocklist", params=params)
                if response.status_code != 200:
                    return BanReport([], 0, f"the API answered {response.status_code}")
                page = response.json()
                for entry in page["entries"]:
                    created = datetime.fromisoformat(entry["created_at"]).timestamp()
                    if entry["cidr"] in ours and created >= since - 1.0:
                        banned.append(entry["cidr"])
                after = page.get("next")
                if after is None:
                    break
            removed = 0
            if cleanup:
                for cidr in banned:
                    if http.delete(f"/v1/blocklist/{quote(cidr, safe='')}").status_code == 204:
                        removed += 1
            return BanReport(sorted(banned), removed)
    except httpx.HTTPError as error:
        return BanReport([], 0, f"cannot reach the API at {api}: {error}")
