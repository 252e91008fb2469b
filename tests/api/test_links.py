"""Links and codes: what a test script needs out of a sign-up or password-reset mail,
found in the render workers (real receiver, real API, real messages), bounded whatever the
sender wrote; the corpus of real-world MIME lists without a 500."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.links import MAX_CODES, MAX_LINKS, MAX_URL, MAX_VISIBLE, extract
from api.render import MAX_TEXT, signed_prefix
from api.renderworker import links_and_codes
from tests.api.test_corpus import CORPUS, as_sent
from tests.conftest import ServiceFactory
from tests.support.api import AUTH, deliver
from tests.support.metrics import sample
from tests.support.processes import ServiceProcess

SIGNUP_HTML = """<!doctype html><html><head><style>.x{color:#123456}</style>
<title>Welcome 2026</title></head><body>
<p>Welcome to Example! Please confirm your address:</p>
<a href="https://click.example.net/ls/click?upn=u001.ZXhh&amp;redirect=https%3A%2F%2Fexample.com%2Fconfirm%3Ft%3Dabc"
   style="padding:12px">Confirm&nbsp;my&nbsp;email</a>
<a href="https://click.example.net/ls/click?upn=u001.bG9nbw"><img src="cid:logo" alt="Example"></a>
<a href="javascript:alert(1)">not this</a> <a href="data:text/html,hi">nor this</a>
<a href="/relative">nor a relative one</a>
<table><tr><td>Your verification code</td><td><strong>739 201</strong></td></tr></table>
<p>Example Inc., 1 Main St, postal code 10115. Call +1 555 123 4567. &copy; 2026.
<a href="mailto:help@example.com?subject=Help">Contact us</a>
<img src="https://t.example.net/open.gif?u=1" width="1" height="1"></p>
</body></html>"""
SIGNUP_TEXT = """Welcome to Example!

Confirm your address: https://click.example.net/ls/click?upn=u001.ZXhh&redirect=https%3A%2F%2Fexample.com%2Fconfirm%3Ft%3Dabc

Your verification code: 739 201 (valid for 10 minutes, until 14:30).
Plan: Pro, $1999 per year, renews 2027-01-01.
"""


def signup() -> bytes:
    """A sign-up mail as a mailing service sends it: multipart/alternative, the HTML part
    quoted-printable, the text part base64 in ISO-8859-1, tracking redirects throughout."""
    message = EmailMessage(policy=SMTP)
    message["From"] = "Example <no-reply@example.com>"
    message["To"] = "tester@mx.test"
    message["Subject"] = "Confirm your Example account"
    message.set_content(SIGNUP_TEXT, charset="iso-8859-1", cte="base64")
    message.add_alternative(SIGNUP_HTML, subtype="html", cte="quoted-printable")
    return message.as_bytes()


def reset() -> bytes:
    """A password reset in plain text only, the code in the subject and the body."""
    message = EmailMessage(policy=SMTP)
    message["From"] = "accounts@example.org"
    message["To"] = "tester@mx.test"
    message["Subject"] = "=?utf-8?q?481_620_est_votre_code_=E2=80=94_Example?="
    message.set_content(
        "Hello,\n\nSomeone asked to reset your password. Your one-time code is 481620.\n"
        "Or open <https://accounts.example.org/reset?token=Zm9vYmFy&uid=42> (expires at\n"
        "16:00 UTC on 12/05/2026). Not you? See https://en.wikipedia.org/wiki/Phishing_(fraud).\n"
        "\nOrder 12345678, invoice €1234.\n",
        cte="quoted-printable",
    )
    return message.as_bytes()


MARKUP = list("<>a href=\"'/:https.com&amp;#x code 12345 ")


def basic(links: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Links as sent (url, text, source), without their display fields."""
    return [{key: link[key] for key in ("url", "text", "source")} for link in links]


def links_of(api: ServiceProcess, message_id: str) -> httpx.Response:
    return httpx.get(f"{api.http_url}/v1/messages/{message_id}/links", headers=AUTH, timeout=30)


def test_a_signup_mail_gives_its_tracking_links_with_their_text_and_its_code(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    answer = links_of(
        shared_api, deliver(shared_receiver, "tester@mx.test", signup(), source=client_ip)
    )
    assert answer.status_code == 200, answer.text[:300]
    found = answer.json()
    confirm = (
        "https://click.example.net/ls/click?upn=u001.ZXhh"
        "&redirect=https%3A%2F%2Fexample.com%2Fconfirm%3Ft%3Dabc"
    )
    # HTML entities decoded; the text part's copy of the same link is not listed again.
    assert basic(found["links"]) == [
        {"url": confirm, "text": "Confirm my email", "source": "html"},
        {
            "url": "https://click.example.net/ls/click?upn=u001.bG9nbw",
            "text": "Example",
            "source": "html",
        },
        {
            "url": "mailto:help@example.com?subject=Help",
            "text": "Contact us",
            "source": "html",
        },
    ]
    # Not the colour in the style, the year, the price, the postal code, the phone number,
    # the date or the time: the code, once, as the text part wrote it.
    assert [code["code"] for code in found["codes"]] == ["739 201"]
    assert "verification code" in found["codes"][0]["context"]
    assert found["truncated"] is False


def test_a_password_reset_in_plain_text_gives_its_link_and_its_code(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    answer = links_of(
        shared_api, deliver(shared_receiver, "tester@mx.test", reset(), source=client_ip)
    )
    assert answer.status_code == 200, answer.text[:300]
    found = answer.json()
    assert basic(found["links"]) == [
        {
            "url": "https://accounts.example.org/reset?token=Zm9vYmFy&uid=42",
            "text": None,
            "source": "text",
        },
        {"url": "https://en.wikipedia.org/wiki/Phishing_(fraud)", "text": None, "source": "text"},
    ]
    # The subject's encoded words are decoded, and it is read first.
    assert found["codes"][0] == {
        "code": "481 620",
        "context": "481 620 est votre code — Example",
        "unsigned": False,
    }
    assert [code["code"] for code in found["codes"]] == ["481 620"]  # 481620: the same code


def test_a_message_with_thousands_of_links_is_cut_and_says_so(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    anchors = "".join(
        f'<a href="https://example.com/item/{n}?utm_source=mail">item {n}</a><br>'
        for n in range(5_000)
    )
    message = EmailMessage(policy=SMTP)
    message["Subject"] = "Our catalogue"
    message.set_content(f"<html><body>{anchors}</body></html>", subtype="html", cte="base64")
    started = time.monotonic()
    answer = links_of(
        shared_api, deliver(shared_receiver, "tester@mx.test", message.as_bytes(), source=client_ip)
    )
    assert answer.status_code == 200, answer.text[:300]
    found = answer.json()
    assert len(found["links"]) == MAX_LINKS and found["truncated"] is True
    assert found["links"][0] == {
        "url": "https://example.com/item/0?utm_source=mail",
        "text": "item 0",
        "source": "html",
        "display": "https://example.com/item/0?utm_source=mail",
        "host": "example.com",
        "userinfo": None,
        "unsigned": False,
    }
    assert time.monotonic() - started < 10  # noisy on a shared machine: a loose bound


def test_a_message_past_the_render_deadline_is_504_and_not_read_again(
    make_api: ServiceFactory, shared_receiver: ServiceProcess, client_ip: str
) -> None:
    # 2.6 MB of HTML takes far longer than the shortest deadline allowed (0.05 s): the
    # worker is killed, and the API says why instead of hanging or answering half a list.
    api = make_api(render_seconds="0.05")
    anchors = "".join(f'<p><a href="https://example.com/{n}">item {n}</a>' for n in range(40_000))
    message = EmailMessage(policy=SMTP)
    message["Subject"] = "too much"
    message.set_content(anchors, subtype="html", cte="base64")
    message_id = deliver(shared_receiver, "tester@mx.test", message.as_bytes(), source=client_ip)
    started = time.monotonic()
    answer = links_of(api, message_id)
    assert answer.status_code == 504, answer.text[:300]
    assert "longer than 0.05s" in answer.json()["error"]
    assert time.monotonic() - started < 5

    # The verdict is remembered: asking again does not start the work again.
    def stopped() -> float:
        return sum(
            sample(api.http_url, "floodgate_render_jobs_total", lane=lane, outcome="deadline")
            for lane in ("small", "general")
        )

    before, kept = stopped(), sample(api.http_url, "floodgate_render_kept_total")
    assert before >= 1
    assert links_of(api, message_id).status_code == 504
    assert stopped() == before
    assert sample(api.http_url, "floodgate_render_kept_total") == kept + 1
    # The message itself still reads (its own job: the raw headers and why).
    view = httpx.get(f"{api.http_url}/v1/messages/{message_id}", headers=AUTH, timeout=30)
    assert view.status_code == 200 and view.json()["parse_error"]


def test_links_asked_while_every_render_worker_is_busy_are_503_with_retry_after(
    make_api: ServiceFactory, shared_receiver: ServiceProcess, client_ip: str
) -> None:
    # One worker for big messages and no queue: of four catalogues asked for at once, the
    # first takes the worker and the others are refused at once rather than waiting.
    api = make_api(render_workers="1", render_queue="0", render_seconds="20")
    anchors = "".join(f'<p><a href="https://example.com/{n}">item {n}</a>' for n in range(10_000))
    ids = []
    for n in range(4):
        message = EmailMessage(policy=SMTP)
        message["Subject"] = f"catalogue {n}"
        message.set_content(anchors, subtype="html", cte="base64")
        ids.append(deliver(shared_receiver, "tester@mx.test", message.as_bytes(), source=client_ip))
    start = threading.Barrier(len(ids))

    def ask(message_id: str) -> httpx.Response:
        start.wait()
        return links_of(api, message_id)

    with ThreadPoolExecutor(len(ids)) as pool:
        answers = list(pool.map(ask, ids))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses[0] == 200 and statuses[-1] == 503, statuses
    assert all(a.headers["retry-after"] == "1" for a in answers if a.status_code == 503)
    refused = [i for i, a in zip(ids, answers, strict=True) if a.status_code == 503]
    assert links_of(api, refused[0]).status_code == 200  # free again: served


def test_an_unknown_id_is_404_and_a_malformed_one_is_422(shared_api: ServiceProcess) -> None:
    assert links_of(shared_api, "0" * 26).status_code == 404
    answer = links_of(shared_api, "not-an-id")
    assert answer.status_code == 422 and answer.json()["error"].startswith("message_id")
    no_token = httpx.get(f"{shared_api.http_url}/v1/messages/{'0' * 26}/links")
    assert no_token.status_code == 401


def test_too_many_parts_is_422_naming_raw(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    parts = "".join("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(101))
    raw = (
        'Subject: parts\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + parts.replace("Content-Type: text/plain", 'Content-Type: multipart/mixed; boundary="b"')
        + "--b--\r\n"
    ).encode()
    answer = links_of(shared_api, deliver(shared_receiver, "tester@mx.test", raw, source=client_ip))
    assert answer.status_code == 422, answer.text[:300]
    assert "MIME parts" in answer.json()["error"] and "/raw" in answer.json()["error"]


def test_every_corpus_message_lists_its_links_or_says_why(
    make_receiver: ServiceFactory, shared_api: ServiceProcess
) -> None:
    receiver = make_receiver(connection_rate=0, message_rate=0, recipient_rate=0, mailbox_rate=0)
    seen = 0
    for path in CORPUS:
        answer = links_of(shared_api, deliver(receiver, "corpus@mx.test", as_sent(path)))
        assert answer.status_code in (200, 422), (path.name, answer.text[:300])
        if answer.status_code == 200:
            found = answer.json()
            assert set(found) == {"links", "codes", "truncated"}, path.name
            seen += len(found["links"])
    assert seen > 0  # the corpus has links (msg_ files with URLs in their text)


# --- the extractor alone ------------------------------------------------------------------


def test_years_prices_phones_dates_times_and_postal_codes_are_not_codes() -> None:
    text = (
        "Your code expires in 2026. Code price: $4999 or 4999 USD or €1234.\n"
        "Code help line: +44 20 7946 0958, or 555-123-4567. Code sent 2026-05-12 at 13:45,\n"
        "12/05/2026, 12.05.2026, 20260512. Postal code 75001. Code in https://x.test/c/829301\n"
        "and ?code=829301. Order #48213911 code."
    )
    assert extract("", text, None)["codes"] == []


def test_codes_are_found_before_and_after_their_word_and_in_capitals() -> None:
    found = extract(
        "",
        "G-582913 is your Google verification code.\nYour PIN: 0427\n"
        "Use K7QP29 as your one-time password.\nConfirmation code: 3HK-2P9\n"
        "far away: " + "x " * 100 + "99887766",
        None,
    )
    codes = [code["code"] for code in found["codes"]]
    assert codes == ["582913", "0427", "K7QP29", "3HK-2P9"]


def test_only_http_https_and_mailto_links_are_listed() -> None:
    html = "".join(
        f'<a href="{url}">x</a>'
        for url in (
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,x",
            "file:///etc/passwd",
            "cid:part1",
            "tel:+15551234567",
            "/relative",
            "https://",
            "http://[::1",
            "mailto:",
            "HTTPS://Example.COM/ok",
            "mailto:a@example.com",
        )
    )
    urls = [link["url"] for link in extract("", None, html)["links"]]
    assert urls == ["HTTPS://Example.COM/ok", "mailto:a@example.com"]


def test_a_url_in_prose_loses_the_punctuation_around_it_not_its_own_brackets() -> None:
    text = (
        "See https://example.com/a. Or (https://example.com/b), "
        "https://en.wikipedia.org/wiki/Foo_(bar)! <https://example.com/c?x=1&y=2>"
    )
    urls = [link["url"] for link in extract("", text, None)["links"]]
    assert urls == [
        "https://example.com/a",
        "https://example.com/b",
        "https://en.wikipedia.org/wiki/Foo_(bar)",
        "https://example.com/c?x=1&y=2",
    ]


def test_an_overlong_url_is_left_out_and_says_so() -> None:
    found = extract("", f"https://example.com/{'a' * MAX_URL} https://example.com/ok", None)
    assert [link["url"] for link in found["links"]] == ["https://example.com/ok"]
    assert found["truncated"] is True


def test_hostile_text_costs_time_linear_in_its_size() -> None:
    # Each of these once took far longer than linear time in a naive scanner.
    for text in ("https://e.test/" + "." * 500_000, "https://e.test/" + ")" * 500_000):
        started = time.process_time()
        extract("", text, None)
        assert time.process_time() - started < 2, text[:20]


def test_a_tag_left_open_at_the_end_costs_no_quadratic_time() -> None:
    # The standard library's parser rescans an unfinished tail from every "<" in it
    # (CVE-2025-6069): 300 KB of "<a " took it over 45 s. A browser drops such a tail.
    html = '<p>Your code: 582913</p><a href="https://example.com/ok">ok</a>' + "<a " * 100_000
    started = time.process_time()
    found = extract("", None, html)
    assert time.process_time() - started < 1
    assert [link["url"] for link in found["links"]] == ["https://example.com/ok"]
    assert [code["code"] for code in found["codes"]] == ["582913"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300), st.text(alphabet=st.sampled_from(MARKUP), max_size=400))
def test_any_text_gives_bounded_well_formed_answers(text: str, html: str) -> None:
    found = extract(text[:40], text, html)
    assert len(found["links"]) <= MAX_LINKS and len(found["codes"]) <= MAX_CODES
    for link in found["links"]:
        assert link["url"].split(":", 1)[0].lower() in ("http", "https", "mailto")
        assert link["source"] in ("text", "html")
    assert len({link["url"] for link in found["links"]}) == len(found["links"])
    assert isinstance(found["truncated"], bool)


def test_a_phone_number_near_a_code_is_not_a_code() -> None:
    text = (
        "Your verification code is 482913. Questions? Call 555-0199.\n"
        "Your code: 739204. Or phone us at 212 555 0199, tel: 5550199."
    )
    assert [code["code"] for code in extract("", text, None)["codes"]] == ["482913", "739204"]


def test_compound_words_announce_codes_but_not_shop_or_postal_ones() -> None:
    found = extract(
        "",
        "Ihr Bestätigungscode lautet 739204.\nDein Sicherheitscode: 5820\n"
        "Ваш кода 884213\nUse passcode 190274\n"
        "Ihr Gutscheincode 4711XY. Postcode 75001. Barcode 40123455",
        None,
    )
    assert [code["code"] for code in found["codes"]] == ["739204", "5820", "884213", "190274"]


def test_links_and_codes_only_in_text_past_a_dkim_length_are_marked_unsigned() -> None:
    body = b"Your code is 123456. Confirm at https://shop.test/confirm\r\n"
    appended = b"Urgent: https://evil.test/pay code 999999\r\n"
    head = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=shop.test; s=s1;\r\n\tl="
        + str(len(body)).encode()
        + b"; h=from; bh=x; b=y\r\nFrom: a@shop.test\r\nSubject: hi\r\n\r\n"
    )
    assert signed_prefix(head + body) is None  # nothing appended: the whole body is signed
    assert signed_prefix(head + body + appended) == head + body
    # A signature without l= claims the whole body: nothing is marked.
    whole = b"DKIM-Signature: v=1; d=shop.test; s=s2; bh=x; b=y\r\n"
    assert signed_prefix(whole + head + body + appended) is None
    answer, _ = links_and_codes({}, head + body + appended)
    found = answer["links"]
    assert [(link["url"], link["unsigned"]) for link in found["links"]] == [
        ("https://shop.test/confirm", False),
        ("https://evil.test/pay", True),
    ]
    assert [(code["code"], code["unsigned"]) for code in found["codes"]] == [
        ("123456", False),
        ("999999", True),
    ]


def test_text_past_the_limits_sets_truncated() -> None:
    assert extract("", None, "<p>code 123456</p>" + "x" * MAX_VISIBLE)["truncated"] is True
    long = b"Subject: s\r\nContent-Type: text/plain\r\n\r\n" + b"y" * (MAX_TEXT + 10)
    answer, _ = links_and_codes({}, long)
    assert answer["links"]["truncated"] is True
    short, _ = links_and_codes({}, long[:100])
    assert short["links"]["truncated"] is False


def test_a_link_shows_its_userinfo_apart_and_its_bidi_controls_escaped() -> None:
    html = '<a href="https://paypal.com@evil.test/">pay\u202elap</a>'
    [link] = extract("", None, html)["links"]
    assert (link["userinfo"], link["host"], link["text"]) == (
        "paypal.com",
        "evil.test",
        "pay[U+202E]lap",
    )
