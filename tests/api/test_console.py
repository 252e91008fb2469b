"""The operator's view of an incident, through real processes: two receivers and an API,
a flood from the bundled tool, `/v1/stats` naming the flooders, the console page (in a
real headless browser) showing them, and a ban from the page refusing them on both
receivers within a second."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from api.stats import REFRESH
from tests.api.conftest import ARTEFACTS
from tests.blocklist.test_enforcement import greeting, refused
from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.support.faultproxy import FaultProxy
from tests.support.processes import ServiceProcess, clean_environ
from tests.support.smtp import RawClient, wait_for

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FLOODERS = ("127.0.30.1", "127.0.30.2")


def _flood(receiver: ServiceProcess, tmp_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "floodgate",
            "flood",
            "--quiet",
            "--target",
            f"{receiver.host}:{receiver.port}",
            "--connect",
            "4",
            "--connect-ips",
            "2",
            "--duration",
            "30",  # ended by the test; long enough for a loaded host's slow start
        ],
        env=clean_environ(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_stats_name_the_flooders_and_the_console_bans_them_everywhere(
    browser: Any, make_receiver: ServiceFactory, make_api: ServiceFactory, tmp_path: Path
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # No automatic bans here: the operator does the banning.
    limits = {"connection_rate": "20", "autoban_threshold": "0", "autoban_refusal_threshold": "0"}
    first, second = make_receiver(**limits), make_receiver(**limits)
    api = make_api()
    flood = _flood(first, tmp_path)
    try:
        started = time.monotonic()
        named: list[str] = []
        while time.monotonic() - started < 30:  # the tool's start and a publish or two
            stats = httpx.get(f"{api.http_url}/v1/stats", headers=AUTH).json()
            named = [key for key, _ in stats["overall"]["windows"]["1m"]["refusals"]]
            if set(FLOODERS) <= set(named):
                break
            time.sleep(0.5)
        assert set(FLOODERS) <= set(named), stats
        assert len(stats["receivers"]) == 2
        minute = stats["overall"]["windows"]["1m"]
        assert minute["reasons"]["connection_rate"] > 0
        assert {k for k, _ in minute["by_reason"]["connection_rate"]} >= set(FLOODERS)

        browser.get(f"{api.http_url}/console#token={ADMIN_TOKEN}")
        # The tables are redrawn at every poll: an element found may go stale at once.
        wait = WebDriverWait(browser, 15, ignored_exceptions=(StaleElementReferenceException,))
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("live: 2 receivers"))
        flooder = f"client-{FLOODERS[0]}"
        # Listed, with why it is refused.
        wait.until(lambda d: "connection_rate" in d.find_element(By.ID, flooder).text)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#receivers tbody tr")) == 2
        # Two snapshots of each receiver (they publish every few seconds): the chart has
        # rates to draw.
        WebDriverWait(browser, 30).until(lambda d: d.execute_script(RATES_DRAWN))
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(ARTEFACTS / "console.png"))

        # The table is redrawn at every poll: find the button and click it in one step (the
        # wait retries when the row went stale in between).
        ban = f"//tr[@id='client-{FLOODERS[0]}']//button"
        wait.until(lambda d: d.find_element(By.XPATH, ban).click() is None)
        banned_at = time.monotonic()
        everywhere = wait_for(
            lambda: refused(first, FLOODERS[0]) and refused(second, FLOODERS[0]), timeout=5
        )
        assert everywhere, "the ban never reached both receivers"
        assert time.monotonic() - banned_at < 1.0 + 0.5  # the click's own request included
        assert not greeting(second, FLOODERS[1]).startswith("554")  # only the one banned
        wait.until(lambda d: "blocked" in d.find_element(By.ID, flooder).text)
        entry = httpx.get(f"{api.http_url}/v1/blocklist/{FLOODERS[0]}", headers=AUTH).json()
        assert entry["source"] == "manual" and entry["reason"] == "banned from the console"
        assert entry["expires_at"] is not None  # one hour, the page's default
    finally:
        flood.terminate()
        flood.wait(30)


def test_the_console_removes_every_automatic_ban_at_once(
    browser: Any, make_receiver: ServiceFactory, make_api: ServiceFactory
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    receiver = make_receiver(connection_rate="5", autoban_refusal_threshold="3")
    api = make_api()
    for source in ("127.0.33.1", "127.0.33.2"):
        for _ in range(12):  # over the connection rate until auto-banned
            client = RawClient(receiver.host, receiver.port, source=source)
            client.close()
    manual = {"cidr": "198.51.100.0/24", "reason": "kept"}
    assert httpx.post(f"{api.http_url}/v1/blocklist", json=manual, headers=AUTH).status_code == 201

    browser.get(f"{api.http_url}/console#token={ADMIN_TOKEN}")
    wait = WebDriverWait(browser, 45)  # a loaded host: the console polls its snapshot
    rows = "#blocklist tbody tr"
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 3)
    browser.find_element(By.ID, "search").send_keys("127.0.33.2")
    assert len(browser.find_elements(By.CSS_SELECTOR, rows)) == 1
    browser.find_element(By.ID, "search").clear()
    browser.find_element(By.ID, "clear-auto").click()
    wait.until(lambda d: d.find_element(By.ID, "done").text == "removed 2 automatic bans")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 1)
    left = httpx.get(f"{api.http_url}/v1/blocklist", headers=AUTH).json()["entries"]
    assert [e["cidr"] for e in left] == ["198.51.100.0/24"]


def test_stats_leave_out_a_snapshot_of_another_shape(
    make_receiver: ServiceFactory,
    make_api: ServiceFactory,
    mongo: MongoClient[dict[str, Any]],
    db_name: str,
) -> None:
    receiver = make_receiver()
    api = make_api()
    # A receiver of another version, mid-upgrade; and one that died an hour ago.
    mongo[db_name]["receiver_stats"].insert_many(
        [
            {"_id": "other version", "at": time.time(), "totals": "not a mapping"},
            {"_id": "long dead", "at": time.time() - 7200, "receiver": "long dead"},
        ]
    )
    deadline = time.monotonic() + 15
    while True:
        answer = httpx.get(f"{api.http_url}/v1/stats", headers=AUTH)
        assert answer.status_code == 200, answer.text
        names = [r["receiver"] for r in answer.json()["receivers"]]
        if names:
            break
        assert time.monotonic() < deadline, "the live receiver never appeared"
        time.sleep(0.5)
    assert names == [f"mx.test 127.0.0.1:{receiver.port}"]
    # The dead one's document is deleted once the stats are read.
    assert mongo[db_name]["receiver_stats"].count_documents({"_id": "long dead"}) == 0


# Every control's box, and whether anything is wider than its container (the page, a
# section): a control past the right edge is one a user would have to scroll sideways for.
LAYOUT = """
const width = window.innerWidth;
const controls = [...document.querySelectorAll("button, input, select")].map((e) => {
  const r = e.getBoundingClientRect();
  return { text: e.textContent || e.id, left: r.left, right: r.right, width: r.width };
});
const overflowing = [...document.querySelectorAll("section, table")]
  .filter((e) => e.scrollWidth > e.clientWidth + 1)
  .map((e) => e.id || e.querySelector("h2").textContent);
return { width, page: document.documentElement.scrollWidth, controls, overflowing };
"""


# The console's own state (console.js): a rate for every receiver, and a poll finished
# (statistics drawn, no blocklist listing in flight) after the `polls` seen before.
RATES_DRAWN = """
return state.last !== null && Object.keys(state.last).length === 2
  && Object.values(state.last).every((r) => r.rate !== null);
"""
REDRAWN = "return state.history.length > arguments[0] && !state.listing;"


def _layout_fits(browser: Any, width: int) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 1400, "deviceScaleFactor": 1, "mobile": width < 600},
    )
    # One poll after the resize redraws the tables (and the blocklist) at this width.
    polls = browser.execute_script("return state.history.length")
    WebDriverWait(browser, 15).until(lambda d: d.execute_script(REDRAWN, polls))
    layout = browser.execute_script(LAYOUT)
    assert layout["width"] == width
    assert layout["page"] <= width, layout
    assert layout["overflowing"] == [], layout
    for control in layout["controls"]:
        assert control["width"] > 0, control  # not collapsed away
        assert 0 <= control["left"] and control["right"] <= width, control
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTEFACTS / f"console-{width}.png"))


def test_the_console_keeps_its_blocklist_current_and_fits_1280_and_400_pixels(
    browser: Any, make_receiver: ServiceFactory, make_api: ServiceFactory
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    receiver = make_receiver(connection_rate="5", autoban_refusal_threshold="3")
    api = make_api()
    browser.get(f"{api.http_url}/console#token={ADMIN_TOKEN}")
    wait = WebDriverWait(browser, 15, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("live: 1 receivers"))
    wait.until(lambda d: d.find_element(By.ID, "blocklist-count").text == "0 entries")

    # Bans made while the page is open, none of them from the page: an automatic one, and
    # one through the API (as `floodgate block add` or another console would).
    for _ in range(12):
        RawClient(receiver.host, receiver.port, source="127.0.36.1").close()
    manual = {"cidr": "198.51.100.0/24", "reason": "from elsewhere"}
    assert httpx.post(f"{api.http_url}/v1/blocklist", json=manual, headers=AUTH).status_code == 201
    shown = time.monotonic()
    wait.until(lambda d: d.find_element(By.ID, "blocklist-count").text == "2 entries")
    assert time.monotonic() - shown < 5
    listed = browser.find_element(By.ID, "blocklist").text
    assert "127.0.36.1" in listed and "198.51.100.0/24" in listed
    # The banned client is in the top clients with its button, at both widths.
    wait.until(lambda d: "Unban" in d.find_element(By.ID, "client-127.0.36.1").text)

    _layout_fits(browser, 1280)
    _layout_fits(browser, 400)
    # Still usable at 400 px: the row's button unbans it.
    unban = "//tr[@id='client-127.0.36.1']//button"
    wait.until(lambda d: d.find_element(By.XPATH, unban).click() is None)
    wait.until(lambda d: d.find_element(By.ID, "blocklist-count").text == "1 entries")


def test_a_console_opened_during_a_store_outage_shows_the_last_snapshot(
    browser: Any,
    make_receiver: ServiceFactory,
    make_api: ServiceFactory,
    store_fault: FaultProxy,
    mongo: MongoClient[dict[str, Any]],
    db_name: str,
) -> None:
    """README: while the store is away the console shows the last snapshot. Nobody looks
    before the outage: the API keeps a recent one by itself, serves it within its deadline
    with `store.up` false, and the page says since when, and recovers when the store does."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    receiver = make_receiver(stats_interval="0.5")
    # The API's road to the store, breakable. The store's own deadline is 30 s here: a poll
    # that waited on the store would take that long; the API's deadline for a poll is about
    # 2.5 s, and the bound below leaves a loaded host room (a CI run took 4.07 s).
    api = make_api(mongodb_uri=store_fault.uri, store_timeout="30")
    name = f"mx.test 127.0.0.1:{receiver.port}"
    assert wait_for(lambda: mongo[db_name]["receiver_stats"].count_documents({}) > 0, 10)
    time.sleep(REFRESH + 1)  # the API's own keeper has read it meanwhile
    store_fault.set_mode("reset")
    broken_at = time.time()

    started = time.monotonic()
    answer = httpx.get(f"{api.http_url}/v1/stats", headers=AUTH, timeout=10)
    assert time.monotonic() - started < 10, "a poll must not hang on the store"
    assert answer.status_code == 200, answer.text
    kept = answer.json()
    assert [r["receiver"] for r in kept["receivers"]] == [name]
    store = kept["store"]
    assert store["up"] is False and store["reason"].startswith(("refused", "lost", "timeout"))
    assert store["read_at"] <= broken_at <= store["away_since"] + 1

    browser.get(f"{api.http_url}/console#token={ADMIN_TOKEN}")
    wait = WebDriverWait(browser, 15, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(lambda d: d.find_element(By.ID, "outage").text.startswith("store away since"))
    assert "showing the statistics read at" in browser.find_element(By.ID, "outage").text
    wait.until(lambda d: name in d.find_element(By.ID, "receivers").text)
    assert browser.find_element(By.ID, "status").text.startswith("kept: 1 receivers")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTEFACTS / "console-store-away.png"))

    store_fault.set_mode("pass")
    wait.until(lambda d: not d.find_element(By.ID, "outage").is_displayed())
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("live: 1 receivers"))
