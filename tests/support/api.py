"""Reading the API from tests: the admin header, a mailbox listing, delivering a message,
and the API's processes (with its render workers) as /proc sees them."""

from __future__ import annotations

import os
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient, queued_id, rss_kb, send_message

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def listing(api: ServiceProcess, address: str) -> list[dict[str, Any]]:
    """A mailbox's messages, newest first (asserts 200)."""
    response = httpx.get(f"{api.http_url}/v1/mailboxes/{address}/messages", headers=AUTH)
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def deliver(receiver: ServiceProcess, mailbox: str, raw: bytes, source: str | None = None) -> str:
    """Send `raw` (CRLF line ends) to `mailbox` over SMTP, on a connection of its own that
    it closes, from `source` if given; its message id (asserts 250)."""
    client = RawClient(receiver.host, receiver.port, source=source)
    try:
        client.hello()
        reply = send_message(client, "sender@example.org", [mailbox], raw)
        assert reply.code == 250, reply
        client.cmd("QUIT")
    finally:
        client.close()
    return queued_id(reply.text)


def family(pid: int) -> list[int]:
    """`pid` and its live children (the API and its render workers)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    return [pid, *children]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of those of `pids` still alive."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone: it spends nothing more
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_total_kb(pids: list[int]) -> int:
    """Resident memory of those of `pids` still alive, in KiB."""
    total = 0
    for pid in pids:
        try:
            total += rss_kb(pid)
        except (OSError, RuntimeError):
            continue
    return total
