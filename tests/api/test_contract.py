"""The OpenAPI document is the contract: schemathesis (--checks all) against a real API
process, with each token, finds no failure. Bounded: 5 examples per operation, fixed seed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.support.processes import ServiceProcess, clean_environ

ROOT = Path(__file__).resolve().parents[2]
READ_TOKEN = "contract-reader-" + "c" * 20


@pytest.mark.parametrize("token", [ADMIN_TOKEN, READ_TOKEN], ids=["admin", "reader"])
def test_the_api_keeps_its_openapi_contract(
    make_api: ServiceFactory, tmp_path: Path, token: str
) -> None:
    api = make_api(read_token=READ_TOKEN)
    env = {
        **clean_environ(),
        "SCHEMATHESIS_HOOKS": "tests.api.schemathesis_hooks",
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
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
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # Every generated case passed (the reader's 401/403 on admin routes are documented).
    summary = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert summary is not None and summary.group(1) == summary.group(2), result.stdout[-3000:]


def test_the_document_declares_bearer_security_and_typed_answers(
    api: ServiceProcess,
) -> None:
    document = httpx.get(api.http_url + "/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["token"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["token"]["description"],
    }
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if not path.startswith("/v1"):
                assert "security" not in operation, (method, path)
                continue
            # Swagger UI's Authorize button applies to every /v1 operation.
            assert operation["security"] == [{"token": []}], (method, path)
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
