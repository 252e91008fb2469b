"""Reading the API from tests: the admin header and a mailbox listing."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN
from tests.support.processes import ServiceProcess

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def listing(api: ServiceProcess, address: str) -> list[dict[str, Any]]:
    """A mailbox's messages, newest first (asserts 200)."""
    response = httpx.get(f"{api.http_url}/v1/mailboxes/{address}/messages", headers=AUTH)
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages
