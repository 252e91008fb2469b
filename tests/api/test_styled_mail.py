"""Styled mail in the web inbox, in a real headless chromium: a newsletter with a `<style>`
block, inline styles, `bgcolor` tables and a `cid:` logo looks as its own HTML does when
opened alone (same colours at sampled points, the logo shown), fetches nothing remote,
opens links in a new tab and sits in a frame as tall as it is; and the page pages through
a whole mailbox, empties it on confirmation and takes the token out of the address bar."""

from __future__ import annotations

import base64
import struct
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from mailstore import new_message_id
from mailstore.documents import to_document
from mailstore.headers import scan_headers
from mailstore.message import MessageDocument
from mailstore.store import MESSAGES
from tests.conftest import ADMIN_TOKEN
from tests.support import newsletter
from tests.support.api import AUTH, deliver, listing
from tests.support.processes import ServiceProcess

ARTEFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artefacts"
TOLERANCE = 3  # per channel: colour management may round a value by one or two


class _Remote(BaseHTTPRequestHandler):
    """A remote host on loopback: counts every request (images, CSS, fonts, the link)."""

    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = b"<p>landing page</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def remote() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Remote", (_Remote,), {"hits": hits}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()
    thread.join(5)


def pixel(browser: Any, x: float, y: float) -> tuple[int, int, int]:
    """The colour chromium painted at viewport point (x, y): a 1x1 screenshot. A one-pixel
    PNG needs no unfiltering (every PNG filter predicts 0 for a first pixel, RFC 2083 6)."""
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "clip": {"x": x, "y": y, "width": 1, "height": 1, "scale": 1}},
    )
    data = base64.b64decode(shot["data"])
    at, idat = 8, b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        if kind == b"IDAT":
            idat += data[at + 8 : at + 8 + length]
        at += 12 + length
    raw = zlib.decompress(idat)
    return raw[1], raw[2], raw[3]


def close(seen: tuple[int, int, int], wanted: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= TOLERANCE for a, b in zip(seen, wanted, strict=True))


# Where each colour is sampled, inside the element (clear of text, borders and corners).
SAMPLES = {
    "header": (newsletter.HEADER_BG, lambda r: (r["x"] + r["width"] - 8, r["y"] + 8)),
    "backdrop": (newsletter.BACKDROP, lambda r: (r["x"] - 10, r["y"] + 8)),
    "panel": (newsletter.PANEL_BG, lambda r: (r["x"] + r["width"] - 8, r["y"] + 8)),
    "cta": (newsletter.BUTTON_BG, lambda r: (r["x"] + 8, r["y"] + r["height"] / 2)),
    "footer": (newsletter.FOOTER_BG, lambda r: (r["x"] + r["width"] - 8, r["y"] + 4)),
    "logo": (newsletter.LOGO, lambda r: (r["x"] + r["width"] / 2, r["y"] + r["height"] / 2)),
}
ELEMENTS = {name: "header" if name == "backdrop" else name for name in SAMPLES}  # by id
RECTS = """
const [frame, ids] = arguments;
const doc = frame ? frame.contentDocument : document;
const origin = frame ? frame.getBoundingClientRect() : {left: 0, top: 0};
const dx = origin.left + (frame ? frame.clientLeft : 0);
const dy = origin.top + (frame ? frame.clientTop : 0);
return Object.fromEntries(ids.map((id) => {
  const r = doc.getElementById(id).getBoundingClientRect();
  return [id, {x: r.left + dx, y: r.top + dy, width: r.width, height: r.height}];
}));
"""


def sampled(browser: Any, frame: Any | None) -> dict[str, tuple[int, int, int]]:
    rects = browser.execute_script(RECTS, frame, list(ELEMENTS.values()))
    return {
        name: pixel(browser, *where(rects[ELEMENTS[name]])) for name, (_, where) in SAMPLES.items()
    }


def test_a_styled_newsletter_looks_as_sent_fetches_nothing_and_opens_links_in_a_new_tab(
    browser: Any,
    shared_api: ServiceProcess,
    shared_receiver: ServiceProcess,
    remote: tuple[str, list[str]],
    tmp_path: Path,
    client_ip: str,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    host, hits = remote
    mailbox = "styled@mx.test"
    raw = newsletter.message(mailbox, host, f"{host}/landing")
    message_id = deliver(shared_receiver, mailbox, raw, source=client_ip)
    # The cid: logo is served from the message itself, whole, as the image it is.
    inline = f"{shared_api.http_url}/v1/messages/{message_id}/inline"
    logo = httpx.get(f"{inline}/0", headers=AUTH)
    assert logo.status_code == 200 and logo.content == newsletter.png(newsletter.LOGO)
    assert logo.headers["content-type"] == "image/png"
    missing = httpx.get(f"{inline}/1", headers=AUTH)
    assert missing.status_code == 404 and "no inline image 1" in missing.json()["error"]
    browser.set_window_size(1280, 1400)
    browser.get(f"{shared_api.http_url}/#token={ADMIN_TOKEN}&mailbox={mailbox}")
    wait = WebDriverWait(browser, 15)
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("live:"))
    # The token left the address bar (and the history entry) as soon as it was read.
    assert "token=" not in browser.current_url and "mailbox=" in browser.current_url
    browser.find_element(By.CSS_SELECTOR, "#messages li.message").click()
    wait.until(lambda d: d.find_element(By.ID, "subject").text == "Weekly deals")
    assert "logo.png (inline image/png" in browser.find_element(By.ID, "inline-parts").text
    frame = browser.find_element(By.ID, "html")
    logo_shown = "const i = arguments[0].contentDocument?.getElementById('logo');"
    logo_shown += "return Boolean(i && i.complete && i.naturalWidth === 48)"
    wait.until(lambda d: d.execute_script(logo_shown, d.find_element(By.ID, "html")))
    frame = browser.find_element(By.ID, "html")
    # As tall as its content (not the 24rem it starts at): no inner scroll, no blank below.
    inner, outer = browser.execute_script(
        "const f = arguments[0]; return [f.contentDocument.documentElement.scrollHeight,"
        " f.clientHeight]",
        frame,
    )
    assert inner > 200 and 0 <= outer - inner <= 4, (inner, outer)
    browser.execute_async_script(
        "let n = 10; const next = () => --n ? requestAnimationFrame(next) : arguments[0]();"
        "requestAnimationFrame(next)"
    )
    framed = sampled(browser, frame)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTEFACTS / "styled-newsletter.png"))
    for name, (wanted, _) in SAMPLES.items():
        assert close(framed[name], wanted), (name, framed[name], wanted)

    # A link opens in a new tab (the message's own frame stays), and only it is fetched
    # (the new tab asks that host for its icon too: a tab's, not the message's, request).
    assert hits == []
    page = browser.current_window_handle
    browser.switch_to.frame(frame)
    browser.find_element(By.ID, "cta").click()
    assert browser.execute_script("return location.href") == "about:srcdoc"
    browser.switch_to.default_content()
    wait.until(lambda d: len(d.window_handles) == 2)
    wait.until(lambda d: "/landing" in hits)
    for handle in browser.window_handles:
        if handle != page:
            browser.switch_to.window(handle)
            browser.close()
    browser.switch_to.window(page)

    # The same HTML opened alone (the logo as a data: URL; scripts and remote fetches off
    # by CSP): the colours the reader sees in the inbox are the sender's.
    data_url = "data:image/png;base64," + base64.b64encode(newsletter.png(newsletter.LOGO)).decode()
    policy = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    reference = newsletter.html(data_url, host, f"{host}/landing").replace(
        "<head>", f'<head><meta http-equiv="Content-Security-Policy" content="{policy}">', 1
    )
    (tmp_path / "reference.html").write_text(reference)
    browser.get((tmp_path / "reference.html").as_uri())
    alone = sampled(browser, None)
    for name in SAMPLES:
        assert close(framed[name], alone[name]), (name, framed[name], alone[name])
    # The tracking pixel, the imported CSS, the web font, the hero image: never asked for.
    assert set(hits) <= {"/landing", "/favicon.ico"}, hits


def _store(mongo: MongoClient[dict[str, object]], db: str, mailbox: str, count: int) -> None:
    """`count` messages in `mailbox`, a minute apart, written as the receiver writes them."""
    start = datetime.now(UTC) - timedelta(hours=2)
    documents = []
    for n in range(count):
        raw = f"From: a@b.example\r\nSubject: note {n:03}\r\n\r\nbody {n}\r\n".encode()
        message = MessageDocument(
            id=new_message_id((start + timedelta(minutes=n)).timestamp()),
            raw=raw,
            mail_from="a@b.example",
            rcpt=(mailbox,),
            peer_ip="192.0.2.1",
            helo="b.example",
            received_at=start + timedelta(minutes=n),
            received_header=b"Received: from b.example\r\n",
            headers=scan_headers(raw).values,
        )
        documents.append(to_document(message, 3600))
    mongo[db][MESSAGES].insert_many(documents)


def test_the_page_pages_through_a_whole_mailbox_and_empties_it_on_confirmation(
    browser: Any,
    shared_api: ServiceProcess,
    mongo: MongoClient[dict[str, object]],
    db_name: str,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    mailbox = "pages@mx.test"
    _store(mongo, db_name, mailbox, 60)
    browser.get(f"{shared_api.http_url}/#token={ADMIN_TOKEN}&mailbox={mailbox}")
    wait = WebDriverWait(browser, 15)

    def subjects() -> list[str]:
        found: list[str] = browser.execute_script(
            "return [...document.querySelectorAll('#messages .subject')].map(s => s.textContent)"
        )
        return found

    wait.until(lambda d: len(subjects()) == 50)
    assert subjects()[0] == "note 059" and browser.find_element(By.ID, "more").is_displayed()
    assert browser.find_element(By.ID, "count").text == "50+ messages"
    browser.find_element(By.ID, "more").click()
    wait.until(lambda d: len(subjects()) == 60)
    assert subjects() == [f"note {n:03}" for n in range(59, -1, -1)]
    assert not browser.find_element(By.ID, "more").is_displayed()
    # Reloaded without the token in the address: the tab kept it.
    browser.refresh()
    wait.until(lambda d: len(subjects()) == 50)

    browser.find_element(By.ID, "empty-mailbox").click()
    dialog = browser.find_element(By.ID, "confirm-empty")
    assert dialog.is_displayed() and mailbox in dialog.text
    browser.find_element(By.ID, "confirm-empty-cancel").click()
    assert len(listing(shared_api, mailbox)) == 50  # the API's default page: nothing gone
    browser.find_element(By.ID, "empty-mailbox").click()
    browser.find_element(By.ID, "confirm-empty-ok").click()
    wait.until(lambda d: d.find_element(By.ID, "empty").is_displayed())
    assert subjects() == [] and listing(shared_api, mailbox) == []
    assert "60 deleted" in browser.find_element(By.ID, "status").text
