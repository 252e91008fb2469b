"""Blocklist admin API and the `floodgate block` CLI, against a real API process and store."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from blocklist import Entry
from tests.conftest import ADMIN_TOKEN
from tests.support.processes import ServiceProcess, clean_environ

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def call(api: ServiceProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, api.http_url + path, headers=AUTH, timeout=10, **kwargs)


def test_blocklist_routes_need_the_token(shared_api: ServiceProcess) -> None:
    assert httpx.get(shared_api.http_url + "/v1/blocklist").status_code == 401
    assert (
        httpx.post(shared_api.http_url + "/v1/blocklist", json={"cidr": "1.2.3.4"}).status_code
        == 401
    )
    assert call(shared_api, "GET", "/v1/blocklist").json() == {"entries": []}


def test_add_is_idempotent_and_updates_reason_and_expiry(shared_api: ServiceProcess) -> None:
    first = call(
        shared_api, "POST", "/v1/blocklist", json={"cidr": "203.0.113.0/24", "reason": "a"}
    )
    assert first.status_code == 201
    entry = first.json()
    assert entry["cidr"] == "203.0.113.0/24" and entry["source"] == "manual"
    assert entry["expires_at"] is None and entry["created_by"].startswith("admin@")
    again = call(
        shared_api,
        "POST",
        "/v1/blocklist",
        json={"cidr": "203.0.113.0/24", "reason": "b", "ttl_seconds": 600},
    )
    assert again.status_code == 200
    assert again.json()["reason"] == "b" and again.json()["expires_at"]
    assert again.json()["created_at"] == entry["created_at"]
    listed = call(shared_api, "GET", "/v1/blocklist").json()["entries"]
    assert [e["cidr"] for e in listed] == ["203.0.113.0/24"]
    history = call(shared_api, "GET", "/v1/blocklist/203.0.113.0%2F24/history").json()["history"]
    assert [h["action"] for h in history] == ["update", "add"]
    assert history[0]["before"]["reason"] == "a" and history[0]["after"]["reason"] == "b"


def test_check_finds_the_most_specific_entry(shared_api: ServiceProcess) -> None:
    for cidr in ("198.51.100.0/24", "198.51.100.7", "2001:db8::/32"):
        assert call(shared_api, "POST", "/v1/blocklist", json={"cidr": cidr}).status_code == 201
    hit = call(shared_api, "GET", "/v1/blocklist/check/198.51.100.7").json()
    assert hit["blocked"] and hit["entry"]["cidr"] == "198.51.100.7/32"
    wide = call(shared_api, "GET", "/v1/blocklist/check/198.51.100.8").json()
    assert wide["entry"]["cidr"] == "198.51.100.0/24"
    mapped = call(shared_api, "GET", "/v1/blocklist/check/::ffff:198.51.100.9").json()
    assert mapped["entry"]["cidr"] == "198.51.100.0/24"
    assert call(shared_api, "GET", "/v1/blocklist/check/2001:db8:ffff::1").json()["blocked"]
    assert call(shared_api, "GET", "/v1/blocklist/check/198.51.101.1").json() == {
        "blocked": False,
        "entry": None,
    }
    bad = call(shared_api, "GET", "/v1/blocklist/check/not-an-ip")
    assert bad.status_code == 422 and "not an IPv4 or IPv6 address" in bad.json()["error"]


def test_delete_url_encoded_cidr_then_404(shared_api: ServiceProcess) -> None:
    call(shared_api, "POST", "/v1/blocklist", json={"cidr": "2001:db8:1::/48"})
    assert call(shared_api, "DELETE", "/v1/blocklist/2001:db8:1::%2F48").status_code == 204
    gone = call(shared_api, "DELETE", "/v1/blocklist/2001:db8:1::%2F48")
    assert gone.status_code == 404 and "not on the blocklist" in gone.json()["error"]
    assert call(shared_api, "DELETE", "/v1/blocklist/1.2.3.4%2F8").status_code == 422
    assert call(shared_api, "GET", "/v1/blocklist/check/2001:db8:1::1").json()["blocked"] is False


def test_listing_pages_through_entries(shared_api: ServiceProcess) -> None:
    body = {"entries": [{"cidr": f"192.0.2.{i}"} for i in range(5)]}
    assert call(shared_api, "POST", "/v1/blocklist/bulk", json=body).json() == {
        "added": 5,
        "updated": 0,
    }
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    for _ in range(5):  # bounded: a paging bug must fail, not spin
        page = call(shared_api, "GET", "/v1/blocklist", params=params).json()
        seen += [e["cidr"] for e in page["entries"]]
        if "next" not in page:
            break
        params["after"] = page["next"]
    assert seen == sorted(f"192.0.2.{i}/32" for i in range(5))
    assert call(shared_api, "GET", "/v1/blocklist", params={"limit": 0}).status_code == 422
    assert call(shared_api, "GET", "/v1/blocklist", params={"source": "x"}).status_code == 422


def test_bulk_is_all_or_nothing(shared_api: ServiceProcess) -> None:
    body = {"entries": [{"cidr": "192.0.2.1"}, {"cidr": "192.0.2.1/24"}, {"cidr": "nope"}]}
    response = call(shared_api, "POST", "/v1/blocklist/bulk", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert "2 invalid entries; nothing was written" in error and "#1" in error and "#2" in error
    assert call(shared_api, "GET", "/v1/blocklist").json()["entries"] == []
    too_many = {"entries": [{"cidr": "192.0.2.1"}] * 10_001}
    assert call(shared_api, "POST", "/v1/blocklist/bulk", json=too_many).status_code == 422
    mixed = {"entries": [{"cidr": "192.0.2.1"}, {"cidr": "192.0.2.2", "ttl_seconds": 60}]}
    call(shared_api, "POST", "/v1/blocklist", json={"cidr": "192.0.2.1"})
    assert call(shared_api, "POST", "/v1/blocklist/bulk", json=mixed).json() == {
        "added": 1,
        "updated": 1,
    }


def block(
    api: ServiceProcess, *args: str, token: str = ADMIN_TOKEN
) -> subprocess.CompletedProcess[str]:
    env = clean_environ()
    env.update(
        {
            "FLOODGATE_API_LISTEN": f"127.0.0.1:{api.port}",
            "FLOODGATE_ADMIN_TOKEN": token,
            "FLOODGATE_LOG_LEVEL": "WARNING",
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "floodgate", "block", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_block_cli_round_trip(shared_api: ServiceProcess, tmp_path: Path) -> None:
    added = block(shared_api, "add", "203.0.113.0/24", "--reason", "spam run", "--ttl", "1h")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added: 203.0.113.0/24") and "spam run" in added.stdout
    assert "updated:" in block(shared_api, "add", "203.0.113.0/24", "--reason", "again").stdout
    check = block(shared_api, "check", "203.0.113.9")
    assert check.returncode == 1 and "is blocked by 203.0.113.0/24" in check.stdout
    listed = block(shared_api, "ls")
    assert "203.0.113.0/24" in listed.stdout and "1 entries" in listed.stderr

    bad = block(shared_api, "add", "203.0.113.7/24")
    assert bad.returncode == 1 and "host bits set" in bad.stderr

    good_file = tmp_path / "list.txt"
    good_file.write_text("# old list\n192.0.2.1 scanner\n\n2001:db8::/48   # botnet\n")
    imported = block(shared_api, "import", str(good_file), "--reason", "imported", "--ttl", "7d")
    assert imported.returncode == 0, imported.stderr
    assert "imported 2 entries: 2 added, 0 updated" in imported.stdout
    entries = {e["cidr"]: e for e in call(shared_api, "GET", "/v1/blocklist").json()["entries"]}
    assert entries["192.0.2.1/32"]["reason"] == "scanner"
    assert entries["2001:db8::/48"]["reason"] == "imported"

    bad_file = tmp_path / "bad.txt"
    bad_file.write_text("198.51.100.1\n198.51.100.1/24\n")
    rejected = block(shared_api, "import", str(bad_file))
    assert rejected.returncode == 1 and "line 2:" in rejected.stderr
    clean = block(shared_api, "check", "198.51.100.1")
    assert clean.returncode == 0 and clean.stdout.strip() == "198.51.100.1 is not blocked"

    assert block(shared_api, "rm", "203.0.113.0/24").returncode == 0
    assert block(shared_api, "rm", "203.0.113.0/24").returncode == 1
    wrong = block(shared_api, "ls", token="wrong")
    assert wrong.returncode == 2 and "refused the admin token" in wrong.stderr


def test_block_cli_adds_a_wide_prefix_only_with_confirm(shared_api: ServiceProcess) -> None:
    for wide in ("10.0.0.0/7", "2001:db8::/31"):
        refused = block(shared_api, "add", wide, "--reason", "whole range")
        assert refused.returncode == 1 and "add --confirm" in refused.stderr, refused.stderr
        added = block(shared_api, "add", wide, "--reason", "whole range", "--confirm")
        assert added.returncode == 0 and added.stdout.startswith(f"added: {wide}"), added.stderr
    narrow = block(shared_api, "add", "10.0.0.0/8", "--confirm")  # harmless where not needed
    assert narrow.returncode == 0, narrow.stderr


@pytest.mark.parametrize("ttl", ["0", "abc", "-5m"])
def test_block_cli_rejects_bad_ttl_before_calling(shared_api: ServiceProcess, ttl: str) -> None:
    result = block(shared_api, "add", "192.0.2.1", "--ttl", ttl)
    assert result.returncode == 2 and "--ttl" in result.stderr


def test_automatic_bans_go_in_one_call(
    shared_api: ServiceProcess, mongo: MongoClient[dict[str, Any]], db_name: str
) -> None:
    now = datetime.now(UTC)
    documents = [
        Entry.new(
            cidr, source=source, ttl_seconds=4 * 3600, actor="receiver", now=when
        ).to_document()
        for cidr, source, when in (
            ("127.0.31.1", "auto", now),
            ("127.0.31.2", "auto", now),
            ("127.0.31.3", "auto", now - timedelta(hours=2)),
            ("198.51.100.0/24", "manual", now - timedelta(hours=2)),
        )
    ]
    mongo[db_name]["blocklist"].insert_many(documents)
    older = block(shared_api, "rm", "--source", "auto", "--older-than", "1h")
    assert older.returncode == 0 and older.stdout.strip() == "removed 1 auto entries", older
    rest = block(shared_api, "rm", "--source", "auto")
    assert rest.stdout.strip() == "removed 2 auto entries", rest
    left = [e["cidr"] for e in call(shared_api, "GET", "/v1/blocklist").json()["entries"]]
    assert left == ["198.51.100.0/24"]
    # Never everything by accident: the source is required.
    assert call(shared_api, "DELETE", "/v1/blocklist").status_code == 422
    assert block(shared_api, "rm").returncode == 2
    history = call(shared_api, "GET", "/v1/blocklist/127.0.31.1/32/history").json()["history"]
    assert history[0]["action"] == "remove"
