"""The web inbox in a real headless browser (Debian's chromium + chromium-driver): a message
sent over SMTP appears on the open page without a reload, opens, and can be deleted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.support.api import AUTH, listing
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient, send_message

READ_TOKEN = "page-reader-" + "p" * 20
ARTEFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artefacts"


def test_a_message_appears_live_opens_and_is_deleted(
    browser: Any, make_api: ServiceFactory, receiver: ServiceProcess
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    api = make_api(read_token=READ_TOKEN)
    page = httpx.get(api.http_url + "/")
    assert (
        page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    )
    browser.get(f"{api.http_url}/#token={READ_TOKEN}&mailbox=web@mx.test")
    wait = WebDriverWait(browser, 15)
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("live:"))

    client = RawClient(receiver.host, receiver.port)
    client.hello()
    body = (
        b"From: Shop <noreply@shop.example>\r\nSubject: Your code 482913\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nYour code is 482913.\r\n"
    )
    assert send_message(client, "noreply@shop.example", ["web@mx.test"], body).code == 250
    wait.until(lambda d: "Your code 482913" in d.find_element(By.ID, "messages").text)

    browser.find_element(By.CSS_SELECTOR, "#messages li.message").click()
    wait.until(lambda d: d.find_element(By.ID, "subject").text == "Your code 482913")
    browser.find_element(By.ID, "tab-text").click()
    assert "Your code is 482913." in browser.find_element(By.ID, "text").text
    assert "Shop <noreply@shop.example>" in browser.find_element(By.ID, "meta").text
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTEFACTS / "inbox.png"))

    browser.find_element(By.ID, "delete").click()
    browser.find_element(By.ID, "confirm-ok").click()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#messages li.message"))
    assert listing(api, "web@mx.test") == []
    assert httpx.get(api.http_url + "/v1/blocklist", headers=AUTH).status_code == 200


def test_the_page_carries_our_domains_and_which_token_works_but_no_secret(
    make_api: ServiceFactory,
) -> None:
    admin_only = httpx.get(make_api(domains="mx.test,alt.test").http_url + "/").text
    assert '<meta name="floodgate-domains" content="mx.test,alt.test">' in admin_only
    assert '<meta name="floodgate-token-kind" content="admin">' in admin_only
    with_reader = httpx.get(make_api(read_token=READ_TOKEN).http_url + "/").text
    assert '<meta name="floodgate-token-kind" content="read">' in with_reader
    for page in (admin_only, with_reader):
        assert ADMIN_TOKEN not in page and READ_TOKEN not in page


def test_a_public_inbox_page_carries_the_read_token(
    browser: Any, make_api: ServiceFactory, receiver: ServiceProcess
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    private = make_api(read_token=READ_TOKEN)
    assert READ_TOKEN not in httpx.get(private.http_url + "/").text
    api = make_api(read_token=READ_TOKEN, public_inbox="true")
    # A visitor types only the mailbox: no token in the URL, none to enter.
    browser.get(f"{api.http_url}/")
    wait = WebDriverWait(browser, 15)
    assert not browser.find_element(By.ID, "token").is_displayed()
    assert "No token needed" in browser.find_element(By.ID, "token-help").text
    browser.find_element(By.ID, "mailbox").send_keys("visitor@mx.test")
    browser.find_element(By.CSS_SELECTOR, "#open button").click()
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("live:"))

    client = RawClient(receiver.host, receiver.port)
    client.hello()
    body = b"From: a@b.example\r\nSubject: public 1\r\n\r\nhello\r\n"
    assert send_message(client, "a@b.example", ["visitor@mx.test"], body).code == 250
    wait.until(lambda d: "public 1" in d.find_element(By.ID, "messages").text)
    # The token the page carries is the read token: the admin routes stay closed to it.
    blocklist = httpx.get(
        api.http_url + "/v1/blocklist", headers={"Authorization": f"Bearer {READ_TOKEN}"}
    )
    assert blocklist.status_code == 403


def test_the_api_docs_render_offline_with_an_authorize_button(
    browser: Any, api: ServiceProcess
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{api.http_url}/docs")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "button.authorize"))
    wait.until(
        lambda d: "/v1/mailboxes/{address}/messages" in d.find_element(By.TAG_NAME, "body").text
    )
    # Every asset came from the API itself.
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert loaded and all(url.startswith(api.http_url) for url in loaded), loaded
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTEFACTS / "docs.png"))


def test_smtputf8_mail_reads_cleanly_and_a_long_attachment_name_downloads(
    browser: Any, make_api: ServiceFactory, receiver: ServiceProcess, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    api = make_api(read_token=READ_TOKEN)
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)}
    )
    browser.get(f"{api.http_url}/#token={READ_TOKEN}&mailbox=utf8@mx.test")
    wait = WebDriverWait(browser, 15)
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("live:"))
    name = "Rechnung-" + "ü" * 300 + ".pdf"  # 609 bytes of UTF-8: no file system takes it
    body = (
        "From: Jörg Müller <jörg@bücher.example>\r\nSubject: Grüße ✓\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        "Content-Type: text/plain; charset=utf-8\r\n\r\nHallo, schöne Grüße.\r\n--b\r\n"
        f'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="{name}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"
    ).encode()
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    assert send_message(client, "j@example.org", ["utf8@mx.test"], body).code == 250
    wait.until(lambda d: "Grüße ✓" in d.find_element(By.ID, "messages").text)
    browser.find_element(By.CSS_SELECTOR, "#messages li.message").click()
    wait.until(lambda d: d.find_element(By.ID, "subject").text == "Grüße ✓")
    browser.find_element(By.ID, "tab-text").click()
    assert "Hallo, schöne Grüße." in browser.find_element(By.ID, "text").text
    assert "Jörg Müller <jörg@bücher.example>" in browser.find_element(By.ID, "meta").text
    browser.find_element(By.CSS_SELECTOR, "#attachments button").click()
    wait.until(lambda d: [p for p in tmp_path.iterdir() if p.suffix == ".pdf"])
    [saved] = [p for p in tmp_path.iterdir() if p.suffix == ".pdf"]
    # Cut to 200 bytes of UTF-8 (never inside a character), the extension kept.
    assert saved.name == "Rechnung-" + "ü" * 93 + ".pdf"
    assert len(saved.name.encode()) <= 200
    assert saved.read_bytes() == b"%PDF-1.4\n"
