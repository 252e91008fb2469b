"""/docs: Swagger UI under a Content-Security-Policy of its own, never framed; every
operation in one of six groups with a summary and a description of its own, and the two
tokens explained, each route naming the ones it really takes."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import httpx

from tests.api.conftest import ARTEFACTS
from tests.conftest import ServiceFactory
from tests.support.processes import ServiceProcess


def test_docs_have_a_csp_that_allows_only_their_own_script_and_no_framing(
    shared_api: ServiceProcess,
) -> None:
    page = httpx.get(shared_api.http_url + "/docs")
    policy = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["frame-ancestors"] == "'none'"
    assert directives["default-src"] == "'none'"
    assert "'unsafe-inline'" not in directives["script-src"]
    # The one inline script (Swagger UI's start-up) is allowed by its hash, and only it.
    [script] = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert directives["script-src"] == f"'self' 'sha256-{digest}'"
    assert page.headers["x-content-type-options"] == "nosniff"


GROUPS = ["mailboxes", "messages", "blocklist", "allowlist", "stats", "health"]
READ_TOKEN = "docs-reader-" + "r" * 24
SAMPLES = {
    "address": "someone@mx.test",
    "message_id": "0" * 26,
    "index": "0",
    "cidr": "203.0.113.0%2F24",
    "ip": "203.0.113.7",
}


def test_every_operation_is_grouped_summarised_and_described(shared_api: ServiceProcess) -> None:
    document = httpx.get(shared_api.http_url + "/openapi.json").json()
    assert [tag["name"] for tag in document["tags"]] == GROUPS
    assert all(tag["description"] for tag in document["tags"])
    operations = [
        (method, path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]
    assert len(operations) >= 29
    used = set()
    for method, path, operation in operations:
        where = (method, path)
        [tag] = operation["tags"]
        assert tag in GROUPS, where
        used.add(tag)
        summary, description = operation["summary"], operation["description"]
        # One line of our own: FastAPI's generated ones are the function name in Title Case.
        assert "\n" not in summary and len(summary) <= 60 and not summary.istitle(), where
        assert len(description) > len(summary) and description != summary, where
    assert used == set(GROUPS)


def test_both_tokens_are_described_and_each_route_names_the_ones_it_really_takes(
    make_api: ServiceFactory,
) -> None:
    api = make_api(read_token=READ_TOKEN)
    document = httpx.get(api.http_url + "/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert "FLOODGATE_ADMIN_TOKEN" in schemes["adminToken"]["description"]
    assert "FLOODGATE_READ_TOKEN" in schemes["readToken"]["description"]
    overview = document["info"]["description"]
    for words in ("admin token", "read token", "FLOODGATE_ADMIN_TOKEN", "FLOODGATE_READ_TOKEN"):
        assert words in overview, words
    reader = {"Authorization": f"Bearer {READ_TOKEN}"}
    checked = refused = 0
    for path, methods in document["paths"].items():
        if not path.startswith("/v1") or path.endswith("/events"):
            continue
        url = api.http_url + path.format(**SAMPLES)
        if path.endswith("/wait"):
            url += "?timeout=0"  # not 30 s for a message that never comes
        for method, operation in methods.items():
            if operation["security"] == [{"adminToken": []}, {"readToken": []}]:
                if method == "get":  # a read answers the reader (a write could change things)
                    status = httpx.get(url, headers=reader, timeout=30).status_code
                    assert status not in (401, 403), (path, status)
                    checked += 1
                continue
            # Every method of an admin route refuses the reader before reading its input
            # (the contract fuzzer's reader run leaves these routes out: tests/api/
            # test_contract.py).
            assert operation["security"] == [{"adminToken": []}], (method, path)
            answer = httpx.request(method, url, headers=reader, json={}, timeout=30)
            assert answer.status_code == 403, (method, path, answer.status_code)
            refused += 1
    assert checked >= 6 and refused >= 15, (checked, refused)


def test_the_docs_page_shows_the_groups_in_order(browser: Any, shared_api: ServiceProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{shared_api.http_url}/docs")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock-tag-section")) >= 6)
    shown = [
        element.get_attribute("data-tag")
        for element in browser.find_elements(By.CSS_SELECTOR, "h3.opblock-tag")
    ]
    assert shown == GROUPS
    # No operation left in FastAPI's "default" group, and the overview names both tokens.
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "default" not in shown and "read token" in body and "admin token" in body
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTEFACTS / "docs-groups.png"))
