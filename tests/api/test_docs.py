"""/docs: Swagger UI under a Content-Security-Policy of its own, never framed."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx

from tests.support.processes import ServiceProcess


def test_docs_have_a_csp_that_allows_only_their_own_script_and_no_framing(
    api: ServiceProcess,
) -> None:
    page = httpx.get(api.http_url + "/docs")
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
