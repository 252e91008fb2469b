"""The web inbox page (api/static/index.html, inbox.js, message.js) in a real headless
chromium at phone width (400 px) and desktop width (1280 px): it explains itself, an empty
mailbox waits live, mail sent over SMTP to a real receiver arrives, every tab shows its
part, remote content stays blocked until asked for, delete asks first, the keyboard moves
through the list, and nothing scrolls sideways. Screenshots: var/test-artefacts/inbox-*.png.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from mailstore import new_message_id
from mailstore.documents import entries_of, to_document
from mailstore.headers import scan_headers
from mailstore.message import MessageDocument
from mailstore.store import MESSAGES
from tests.conftest import ServiceFactory
from tests.support.api import AUTH, deliver, listing
from tests.support.processes import ServiceProcess

READ_TOKEN = "page-reader-" + "q" * 20
ARTEFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artefacts"
WIDTHS = (400, 1280)
SUBJECT = "Please confirm your account registration at Example Shop today"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


class _Pixel(BaseHTTPRequestHandler):
    """A remote image host on loopback: counts who asked for the tracking pixel."""

    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def pixel_host() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    handler = type("Pixel", (_Pixel,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()
    thread.join(5)


def at_width(browser: Any, width: int) -> None:
    """The viewport as a phone or a desktop has it (CSS pixels; headless chromium has no
    window frame, so the window's width is the page's)."""
    browser.set_window_size(width, 900)
    assert browser.execute_script("return innerWidth") == width


def assert_no_sideways_scroll(browser: Any) -> None:
    wide, seen = browser.execute_script(
        "const e = document.documentElement; return [e.scrollWidth, e.clientWidth]"
    )
    assert wide <= seen, f"page is {wide} px wide in a {seen} px viewport"


def shot(browser: Any, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    # The message's frame paints in a process of its own (an opaque origin), after the page:
    # wait for a few frames so the screenshot shows it.
    browser.execute_async_script(
        "let n = 10; const next = () => --n ? requestAnimationFrame(next) : arguments[0]();"
        "requestAnimationFrame(next)"
    )
    assert browser.save_screenshot(str(path))
    print(f"screenshot: {path}")


def shown(browser: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    text: str = browser.find_element(By.CSS_SELECTOR, css).text
    return text


def tab(browser: Any, name: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, f"tab-{name}").click()
    assert browser.find_element(By.ID, f"panel-{name}").is_displayed()


def newsletter(mailbox: str, image_url: str) -> bytes:
    return (
        f"From: Example Shop <noreply@shop.example>\r\nTo: {mailbox}\r\n"
        f"Subject: {SUBJECT}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n--alt\r\n'
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "Your code is 482913.\r\nConfirm: https://shop.example/confirm?t=abc\r\n--alt\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n"
        "<p>Hello <b>there</b>, your code is 482913.</p>"
        f'<p><a href="https://shop.example/confirm?t=abc">Confirm</a></p>'
        f'<img src="{image_url}/pixel.png" alt="shop logo" width="40" height="40">\r\n'
        "--alt--\r\n"
    ).encode()


@pytest.mark.parametrize("width", WIDTHS)
def test_a_mailbox_waits_live_then_shows_every_tab_of_a_message_and_deletes_it_on_confirm(
    browser: Any,
    make_api: ServiceFactory,
    receiver: ServiceProcess,
    pixel_host: tuple[str, list[str]],
    width: int,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image_host, hits = pixel_host
    api = make_api(read_token=READ_TOKEN)
    mailbox = f"signup{width}@mx.test"
    at_width(browser, width)
    browser.get(f"{api.http_url}/#token={READ_TOKEN}&mailbox={mailbox}")
    wait = WebDriverWait(browser, 15)
    wait.until(lambda d: shown(d, "#status").startswith("live:"))
    # Empty: it says so, and that it is waiting.
    assert f"No mail for {mailbox} yet." in shown(browser, "#empty")
    assert "Waiting for it live" in shown(browser, "#empty")
    assert browser.find_element(By.ID, "token").get_attribute("placeholder") == "read token"
    assert_no_sideways_scroll(browser)
    shot(browser, f"inbox-{width}-empty")

    deliver(receiver, mailbox, newsletter(mailbox, image_host))
    wait.until(lambda d: SUBJECT in shown(d, "#messages"))
    assert not browser.find_element(By.ID, "empty").is_displayed()
    item = browser.find_element(By.CSS_SELECTOR, "#messages li.message")
    when = item.find_element(By.TAG_NAME, "time")
    assert when.text in ("just now",) or when.text.endswith("ago"), when.text
    assert when.get_attribute("datetime")[:4] in when.get_attribute("title")
    # The subject wraps between words: two or three lines, not one letter a line.
    subject = item.find_element(By.CSS_SELECTOR, ".subject")
    lines = browser.execute_script(
        "const s = getComputedStyle(arguments[0]);"
        "return arguments[0].getBoundingClientRect().height / parseFloat(s.lineHeight)",
        subject,
    )
    assert lines < 4, lines
    assert_no_sideways_scroll(browser)
    shot(browser, f"inbox-{width}-list")

    item.click()
    wait.until(lambda d: shown(d, "#subject") == SUBJECT)
    if width < 720:  # one column: the list gives way to the message
        assert not browser.find_element(By.ID, "list").is_displayed()
    # Rendered, with the remote image held back and said so.
    note = browser.find_element(By.ID, "remote-note")
    assert note.is_displayed() and "Remote content blocked (1 item)" in note.text
    frame = browser.find_element(By.ID, "html")
    browser.switch_to.frame(frame)
    assert "Hello there, your code is 482913." in browser.find_element(By.TAG_NAME, "body").text
    browser.switch_to.default_content()
    assert hits == []
    assert_no_sideways_scroll(browser)
    shot(browser, f"inbox-{width}-rendered")
    browser.find_element(By.ID, "remote-show").click()
    wait.until(lambda d: hits == ["/pixel.png"])
    assert "Remote content shown" in shown(browser, "#remote-note")

    tab(browser, "text")
    assert "Your code is 482913." in shown(browser, "#text")
    tab(browser, "headers")
    assert [SUBJECT] == [
        row.find_element(By.TAG_NAME, "td").text
        for row in browser.find_elements(By.CSS_SELECTOR, "#headers tr")
        if row.find_element(By.TAG_NAME, "th").text == "Subject"
    ]
    assert_no_sideways_scroll(browser)
    shot(browser, f"inbox-{width}-headers")
    tab(browser, "raw")
    wait.until(lambda d: 'boundary="alt"' in shown(d, "#raw"))
    assert shown(browser, "#raw").startswith("Received:")
    assert_no_sideways_scroll(browser)
    shot(browser, f"inbox-{width}-source")
    tab(browser, "auth")
    assert "Not checked" in shown(browser, "#auth")
    tab(browser, "links")
    wait.until(lambda d: "482913" in shown(d, "#links .codes"))
    assert_no_sideways_scroll(browser)
    shot(browser, f"inbox-{width}-links")

    # Delete asks first: cancelled, the message stays; confirmed, it goes.
    browser.find_element(By.ID, "delete").click()
    dialog = browser.find_element(By.ID, "confirm-delete")
    assert dialog.is_displayed() and SUBJECT in dialog.text
    shot(browser, f"inbox-{width}-confirm")
    browser.find_element(By.ID, "confirm-cancel").click()
    assert not dialog.is_displayed()
    assert len(listing(api, mailbox)) == 1
    browser.find_element(By.ID, "delete").click()
    browser.find_element(By.ID, "confirm-ok").click()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#messages li.message"))
    assert listing(api, mailbox) == []
    wait.until(lambda d: d.find_element(By.ID, "empty").is_displayed())


def test_showing_remote_content_is_a_choice_for_one_message_only(
    browser: Any,
    make_api: ServiceFactory,
    receiver: ServiceProcess,
    pixel_host: tuple[str, list[str]],
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image_host, hits = pixel_host
    api = make_api(read_token=READ_TOKEN)
    mailbox = "remote-choice@mx.test"
    deliver(receiver, mailbox, newsletter(mailbox, f"{image_host}/first"))
    deliver(receiver, mailbox, newsletter(mailbox, f"{image_host}/second"))
    at_width(browser, 1280)
    browser.get(f"{api.http_url}/#token={READ_TOKEN}&mailbox={mailbox}")
    wait = WebDriverWait(browser, 15)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#messages li.message")) == 2)
    newest, oldest = browser.find_elements(By.CSS_SELECTOR, "#messages li.message")

    def note() -> str:
        return shown(browser, "#remote-note")

    newest.click()
    wait.until(lambda d: "Remote content blocked (1 item)" in note())
    browser.find_element(By.ID, "remote-show").click()
    wait.until(lambda d: hits == ["/second/pixel.png"])
    # The other message stays blocked: nothing of it is fetched.
    oldest.click()
    wait.until(lambda d: "Remote content blocked (1 item)" in note())
    assert browser.find_element(By.ID, "remote-show").is_displayed()
    time.sleep(0.5)  # a fetch the frame would make has had its time
    assert hits == ["/second/pixel.png"]
    # Back to the message whose content was shown: still shown, without asking again.
    newest.click()
    wait.until(lambda d: "Remote content shown (1 item)" in note())
    assert not browser.find_element(By.ID, "remote-show").is_displayed()
    assert "/first/pixel.png" not in hits


@pytest.mark.parametrize("width", WIDTHS)
def test_j_and_k_move_through_the_list_enter_opens_and_escape_goes_back(
    browser: Any, make_api: ServiceFactory, receiver: ServiceProcess, width: int
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    api = make_api(read_token=READ_TOKEN)
    mailbox = f"keys{width}@mx.test"
    for n in (1, 2, 3):
        deliver(
            receiver,
            mailbox,
            f"From: a@b.example\r\nSubject: note {n}\r\n\r\nbody {n}\r\n".encode(),
        )
    at_width(browser, width)
    browser.get(f"{api.http_url}/#token={READ_TOKEN}&mailbox={mailbox}")
    wait = WebDriverWait(browser, 15)
    wait.until(lambda d: shown(d, "#status").startswith("live:"))
    assert [s.text for s in browser.find_elements(By.CSS_SELECTOR, "#messages .subject")] == [
        "note 3",
        "note 2",
        "note 1",
    ]

    def press(key: str) -> None:
        ActionChains(browser).send_keys(key).perform()

    def selected() -> str:
        return shown(browser, "#messages li.selected .subject")

    browser.find_element(By.TAG_NAME, "body").click()
    press("j")
    assert selected() == "note 3"
    press("j")
    press("j")
    assert selected() == "note 1"
    press("j")  # the last stays selected
    assert selected() == "note 1"
    press("k")
    assert selected() == "note 2"
    press(Keys.ENTER)
    wait.until(lambda d: shown(d, "#subject") == "note 2")
    assert_no_sideways_scroll(browser)
    shot(browser, f"inbox-{width}-keyboard")
    press(Keys.ESCAPE)
    wait.until(lambda d: not d.find_element(By.ID, "message").is_displayed())
    assert browser.find_element(By.ID, "list").is_displayed()
    assert selected() == "note 2"
    press("k")
    assert selected() == "note 3"
    assert len(listing(api, mailbox)) == 3  # keys never delete


def test_the_page_says_which_token_works_and_which_domains_we_take(
    browser: Any, make_api: ServiceFactory
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # No read token configured: the admin token is the one that works, and the page says so.
    api = make_api(domains="mx.test,alt.test")
    browser.get(f"{api.http_url}/")
    assert browser.find_element(By.ID, "token").get_attribute("placeholder") == "admin token"
    assert "no read token" in shown(browser, "#token-help")
    assert "mx.test, alt.test" in shown(browser, "#guide")
    assert browser.find_element(By.ID, "mailbox").get_attribute("placeholder") == "anything@mx.test"
    browser.find_element(By.ID, "mailbox").send_keys("someone@elsewhere.example")
    browser.find_element(By.ID, "token").send_keys("not-the-token")
    browser.find_element(By.CSS_SELECTOR, "#open button").click()
    wait = WebDriverWait(browser, 15)
    wait.until(lambda d: d.find_element(By.ID, "notice").is_displayed())
    assert "We do not receive mail for elsewhere.example" in shown(browser, "#notice")
    assert "mx.test, alt.test" in shown(browser, "#notice")
    shot(browser, "inbox-1280-foreign-domain")
    # One of ours, with a wrong token: the page says which token to use.
    box = browser.find_element(By.ID, "mailbox")
    box.clear()
    box.send_keys("someone@alt.test")
    browser.find_element(By.CSS_SELECTOR, "#open button").click()
    wait.until(lambda d: "does not open mailboxes here" in shown(d, "#status"))
    assert "admin token" in shown(browser, "#status")
    assert not browser.find_element(By.ID, "notice").is_displayed()


def _store_with_auth(mongo: MongoClient[dict[str, object]], db: str, mailbox: str) -> str:
    """A message stored as the receiver stores it (mailstore's document), with the verdicts
    the receiver's checks add (the `auth` contract); written straight to the real store."""
    raw = (
        b"From: Shop <noreply@shop.example>\r\nSubject: verdicts\r\n"
        b"DKIM-Signature: v=1; d=shop.example; s=s1; b=x\r\n\r\nhello\r\n"
    )
    incoming = MessageDocument(
        id=new_message_id(),
        raw=raw,
        mail_from="bounce@mail.shop.example",
        rcpt=(mailbox,),
        peer_ip="192.0.2.25",
        helo="mail.shop.example",
        received_at=datetime.now(UTC),
        received_header=b"Received: from mail.shop.example\r\n",
        headers=scan_headers(raw).values,
    )
    document = to_document(incoming, 3600)
    document["auth"] = {
        "spf": {"result": "pass", "domain": "mail.shop.example", "reason": "192.0.2.25 listed"},
        "helo": {"result": "none", "domain": "mail.shop.example", "reason": "no SPF record"},
        "dkim": [
            {"result": "pass", "domain": "shop.example", "selector": "s1", "reason": "good"},
            {"result": "fail", "domain": "esp.example", "selector": "k2", "reason": "body hash"},
        ],
        "dmarc": {
            "result": "pass",
            "domain": "shop.example",
            "policy": "reject",
            "spf_aligned": True,
            "dkim_aligned": True,
            "reason": "aligned DKIM pass",
        },
        "arc": {"result": "none", "reason": "no ARC set"},
    }
    mongo[db][MESSAGES].insert_one(document)
    assert entries_of(document) == []  # one mailbox: its key is in the document itself
    return incoming.id


@pytest.mark.parametrize("width", WIDTHS)
def test_the_authentication_tab_shows_each_verdict_with_its_reason(
    browser: Any,
    make_api: ServiceFactory,
    mongo: MongoClient[dict[str, object]],
    db_name: str,
    width: int,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    api = make_api(read_token=READ_TOKEN)
    mailbox = f"auth{width}@mx.test"
    _store_with_auth(mongo, db_name, mailbox)
    at_width(browser, width)
    browser.get(f"{api.http_url}/#token={READ_TOKEN}&mailbox={mailbox}")
    wait = WebDriverWait(browser, 15)
    wait.until(lambda d: "verdicts" in shown(d, "#messages"))
    browser.find_element(By.CSS_SELECTOR, "#messages li.message").click()
    wait.until(lambda d: shown(d, "#subject") == "verdicts")
    tab(browser, "auth")
    assert shown(browser, "#auth .summary").startswith("DMARC passed")
    checks = browser.find_elements(By.CSS_SELECTOR, "#auth .check")
    results = [
        (
            c.find_element(By.CSS_SELECTOR, ".title").text,
            c.find_element(By.CSS_SELECTOR, ".badge").text.lower(),
            c.find_element(By.CSS_SELECTOR, ".badge").get_attribute("class"),
        )
        for c in checks
    ]
    assert results == [
        ("DMARC (From: domain)", "pass", "badge good"),
        ("SPF (envelope sender)", "pass", "badge good"),
        ("SPF (HELO name)", "none", "badge neutral"),
        ("DKIM signature", "pass", "badge good"),
        ("DKIM signature", "fail", "badge bad"),
        ("ARC", "none", "badge neutral"),
    ]
    dmarc = checks[0].text
    assert "reject" in dmarc and "SPF aligned\nyes" in dmarc, dmarc
    assert "body hash" in shown(browser, "#auth") and "esp.example" in shown(browser, "#auth")
    assert_no_sideways_scroll(browser)
    shot(browser, f"inbox-{width}-auth")
    # Dark, when the reader's system is: the page's colours, not the badges' words, change.
    light = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    dark = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert (light, dark) == ("rgb(255, 255, 255)", "rgb(21, 24, 28)")
    assert browser.find_element(By.CSS_SELECTOR, "#auth .badge").text == "PASS"
    shot(browser, f"inbox-{width}-auth-dark")


def test_codes_and_links_are_listed_with_copy_buttons(
    browser: Any, make_api: ServiceFactory, receiver: ServiceProcess
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    api = make_api(read_token=READ_TOKEN)
    mailbox = "links@mx.test"
    raw = newsletter(mailbox, "https://images.shop.example").replace(
        b"t=abc\r\n--alt", b"t=abc\r\nPay: https://paypal.com@evil.test/pay\r\n--alt", 1
    )
    deliver(receiver, mailbox, raw)
    [message_id] = [m["id"] for m in listing(api, mailbox)]
    probe = httpx.get(f"{api.http_url}/v1/messages/{message_id}/links", headers=AUTH)
    assert probe.status_code == 200, probe.text
    browser.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": api.http_url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    browser.get(f"{api.http_url}/#token={READ_TOKEN}&mailbox={mailbox}")
    wait = WebDriverWait(browser, 15)
    wait.until(lambda d: SUBJECT in shown(d, "#messages"))
    browser.find_element(By.CSS_SELECTOR, "#messages li.message").click()
    wait.until(lambda d: shown(d, "#subject") == SUBJECT)
    tab(browser, "links")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#links .code-row"))
    code_row = browser.find_element(By.CSS_SELECTOR, "#links .code-row")
    assert code_row.find_element(By.CSS_SELECTOR, ".code").text == "482913"
    urls = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#links .link-row .url")]
    assert "https://shop.example/confirm?t=abc" in urls
    # A userinfo posing as the host is set apart: where the link really goes.
    [apart] = browser.find_elements(By.CSS_SELECTOR, "#links .link-row .userinfo")
    assert apart.get_attribute("textContent") == "goes to evil.test, not to paypal.com"
    # A download name is cut by UTF-8 bytes (100 CJK characters were 300 bytes, which the
    # browser refused to save), its extension kept, a bidi override replaced.
    cut = browser.execute_script("return safeName(arguments[0])", "請求書" * 40 + ".pdf")
    assert cut == "請求書" * 21 + "請求.pdf"
    assert browser.execute_script("return safeName(arguments[0])", "a\u202efdp.exe") == "a_fdp.exe"
    code_row.find_element(By.CSS_SELECTOR, "button.copy").click()
    wait.until(lambda d: code_row.find_element(By.CSS_SELECTOR, "button.copy").text == "Copied")
    copied = browser.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], e => arguments[0]('error ' + e))"
    )
    assert copied == "482913"
    shot(browser, "inbox-1280-links-codes")
