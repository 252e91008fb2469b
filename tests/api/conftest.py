"""Fixtures for the API tests: a real headless browser (Debian's chromium + chromium-driver)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServiceFactory

ARTEFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artefacts"


@pytest.fixture
def browser(make_api: ServiceFactory) -> Iterator[Any]:
    """A headless chromium. It asks for `make_api` only to be torn down before the APIs
    a test made: a page still open keeps a live stream to its API, which would then wait
    out its graceful shutdown (10 s) at every teardown."""
    driver_path, chromium = shutil.which("chromedriver"), shutil.which("chromium")
    if driver_path is None or chromium is None:
        pytest.skip("chromium + chromium-driver missing: FLOODGATE_INSTALL_TOOLS=1 make test")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # with both paths given, nothing is downloaded
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1200,800",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
