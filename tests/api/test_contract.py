"""The OpenAPI document is the contract: schemathesis (--checks all) against a real API
process, with each token, finds no failure. Bounded: 5 examples per operation, fixed seed.
The store holds real messages first, hostile ones included, and the fuzzer is given their
ids (a `message-id` format: tests/api/schemathesis_hooks.py), so it exercises rendering,
attachments and raw, not only 404s."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.hostile import big_attachment, bombs, smtputf8, typical
from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.support.api import deliver
from tests.support.metrics import sample
from tests.support.processes import ServiceProcess, clean_environ

ROOT = Path(__file__).resolve().parents[2]
READ_TOKEN = "contract-reader-" + "c" * 20
DAMAGED = (
    b'Subject: cut\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\nhi\r\n'
    b"--b\r\nContent-Disposition: attachment; filename=a.bin\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nAAAA!!!\r\n"
)


def seed(receiver: ServiceProcess) -> dict[str, Any]:
    """Everyday and hostile messages, each twice: the reads' ids, and for each the twin a
    DELETE gets instead (see tests/api/schemathesis_hooks.py)."""
    hostile = [raw for name, raw in bombs().items() if name != "big_attachment"]
    messages = [*(typical(n) for n in range(4)), *hostile]
    messages += [big_attachment(500_000)[0], DAMAGED, smtputf8()]
    ids = [deliver(receiver, "contract@mx.test", raw) for raw in messages]
    twins = [deliver(receiver, "twins@mx.test", raw) for raw in messages]
    return {"ids": ids, "twins": dict(zip(ids, twins, strict=True))}


def admin_only(api: ServiceProcess) -> list[str]:
    """The operations (as schemathesis names them, "METHOD /path") the read token may not use."""
    document = httpx.get(api.http_url + "/openapi.json").json()
    return [
        f"{method.upper()} {path}"
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if {"readToken": []} not in operation.get("security", [{"readToken": []}])
    ]


# ~850 generated requests for the admin, ~300 for the reader: a minute or two alone,
# several on a host busy with other tests (bounded by the examples, not by a clock).
@pytest.mark.timeout(900)
@pytest.mark.parametrize("token", [ADMIN_TOKEN, READ_TOKEN], ids=["admin", "reader"])
def test_the_api_keeps_its_openapi_contract(
    make_api: ServiceFactory, receiver: ServiceProcess, tmp_path: Path, token: str
) -> None:
    # ~850 requests from one client as fast as it can: reads a second are not what this
    # test is about (their 429 is documented, and tested in tests/api/test_shares.py).
    api = make_api(read_token=READ_TOKEN, read_rate="1000000", read_burst="1000000")
    # The reader's run leaves out the admin-only operations: each answers the reader 403
    # whatever its input (every method checked in tests/api/test_docs.py), and fuzzing them
    # again would only repeat that ~400 times; the admin's run fuzzes them.
    leave_out = [] if token == ADMIN_TOKEN else admin_only(api)
    env = {
        **clean_environ(),
        "SCHEMATHESIS_HOOKS": "tests.api.schemathesis_hooks",
        "PYTHONPATH": str(ROOT),
        "CONTRACT_SEEDED": json.dumps(seed(receiver)),
    }
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(Path(__file__).parent / "schemathesis.toml"),
            "run",
            f"{api.http_url}/openapi.json",
            "--checks",
            "all",
            "-H",
            f"Authorization: Bearer {token}",
            "--max-examples",
            "5",
            "--seed",
            "4",
            "--no-color",
            *(option for name in leave_out for option in ("--exclude-name", name)),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # Every generated case passed (the reader's 401/403 on admin routes are documented).
    summary = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert summary is not None and summary.group(1) == summary.group(2), result.stdout[-3000:]
    # The fuzzer reached stored messages: rendered, extracted and raw answers were served.
    for route in ("", "/raw", "/attachments/{index}", "/links"):
        name = "/v1/messages/{message_id}" + route
        served = sample(api.http_url, "floodgate_api_requests_total", route=name, status="200")
        assert served > 0, name


def test_the_document_declares_bearer_security_and_typed_answers(
    api: ServiceProcess,
) -> None:
    document = httpx.get(api.http_url + "/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    for name in ("adminToken", "readToken"):
        assert schemes[name] == {
            "type": "http",
            "scheme": "bearer",
            "description": schemes[name]["description"],
        }
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if not path.startswith("/v1"):
                assert "security" not in operation, (method, path)
                continue
            # Swagger UI's Authorize button applies to every /v1 operation (which token
            # each takes: tests/api/test_docs.py).
            assert {"adminToken": []} in operation["security"], (method, path)
            for status in ("200", "201"):
                answer = operation["responses"].get(status, {})
                json_schema = answer.get("content", {}).get("application/json", {}).get("schema")
                if json_schema is not None:
                    # Typed: a named model, never an untyped object.
                    assert "$ref" in json_schema, (method, path, status, json_schema)
                    checked += 1
    assert checked >= 14
    detail = document["components"]["schemas"]["MessageDetail"]["properties"]
    assert {"from", "to", "cc", "attachments", "html_safe", "parse_error"} <= set(detail)


def test_docs_are_served_without_the_internet(api: ServiceProcess) -> None:
    page = httpx.get(api.http_url + "/docs")
    assert page.status_code == 200
    sources = re.findall(r"""(?:src|href)=["']([^"']+)""", page.text)
    assert sources and all(s.startswith("/docs/assets/") for s in sources), sources
    for source in sources:
        asset = httpx.get(api.http_url + source)
        assert asset.status_code == 200 and len(asset.content) > 0, source
    bundle = httpx.get(api.http_url + "/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in bundle.content[:2000]
    assert httpx.get(api.http_url + "/docs/assets/nothing.js").status_code == 404
    assert httpx.get(api.http_url + "/redoc").status_code == 404  # it would use a CDN
