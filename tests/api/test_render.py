"""Rendering that no sender can break: hostile MIME always renders (200), bounded."""

from __future__ import annotations

import json
from email.message import EmailMessage
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.render import MAX_BOUNDARIES, MAX_FILENAME, view
from tests.support.api import AUTH
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient, queued_id, send_message

CHARSETS = ["utf-8", "idna", "utf-7", "bogus-charset", "us-ascii", "", "utf-16", "punycode"]
ENCODINGS = ["base64", "quoted-printable", "7bit", "8bit", "x-uuencode", "garbage", ""]
HEADERS = [
    b"Message-ID: <[>",
    b"To: a:b:c;;d@e",
    b"From: =?utf-8?b?!!!?= <x@y>",
    b"Subject: =?idna?q?x?=",
    b"Date: not a date",
    b"Content-Disposition: attachment; filename*=bogus''%ff",
    b"Received: ((((((((((",
]


@st.composite
def mime(draw: st.DrawFn, depth: int = 0) -> bytes:
    headers = draw(st.lists(st.sampled_from(HEADERS), max_size=3))
    if depth < 4 and draw(st.booleans()):
        boundary = draw(st.sampled_from([b"b", b"x--", b"", b"=_"]))
        parts = draw(st.lists(mime(depth + 1), max_size=3))  # type: ignore[call-arg]
        body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
        body += draw(st.sampled_from([b"--" + boundary + b"--\r\n", b"", b"--" + boundary]))
        kind = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"'
    else:
        charset = draw(st.sampled_from(CHARSETS)).encode()
        kind = b"Content-Type: text/" + draw(st.sampled_from([b"plain", b"html"]))
        kind += b"; charset=" + charset
        encoding = draw(st.sampled_from(ENCODINGS)).encode()
        headers.append(b"Content-Transfer-Encoding: " + encoding)
        body = draw(st.binary(max_size=60))
    return b"\r\n".join([*headers, kind]) + b"\r\n\r\n" + body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mime())
def test_hostile_mime_always_renders(raw: bytes) -> None:
    shown = view(raw)
    shape = {"headers", "from", "to", "cc", "text", "html", "html_safe", "attachments"}
    shape |= {"from_repaired", "inline"}
    assert set(shown) == shape | {"parse_error"}
    assert all(isinstance(a["size"], int) for a in shown["attachments"])
    assert all(isinstance(n, str) and isinstance(v, str) for n, v in shown["headers"])
    json.dumps(shown, ensure_ascii=False).encode("utf-8")  # valid UTF-8 throughout


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2_000))
def test_random_bytes_render_as_valid_utf8(raw: bytes) -> None:
    json.dumps(view(raw), ensure_ascii=False).encode("utf-8")


def test_thousands_of_nested_parts_render_as_raw_headers_with_the_reason() -> None:
    nested = b"Subject: deep\r\n"
    for n in range(3000):
        nested += b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (n, n)
    shown = view(nested)
    assert shown["parse_error"] == f"more than {MAX_BOUNDARIES} MIME parts"
    assert ["Subject", "deep"] in shown["headers"]


def test_the_reported_messages_read_back_with_200(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    nested = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (n, n)
        for n in range(3000)
    )
    bodies = [
        b"Content-Type: text/plain; charset=idna\r\n\r\nhello\r\n",
        b"Subject: deep\r\n" + nested,
        b"Message-ID: <[>\r\nSubject: id\r\n\r\nx\r\n",
        b"To: a:b:c;;d@e\r\nSubject: group\r\n\r\nx\r\n",
    ]
    client = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    client.hello()
    for body in bodies:
        reply = send_message(client, "a@example.org", ["render@mx.test"], body)
        assert reply.code == 250, reply
        message = queued_id(reply.text)
        view = httpx.get(f"{shared_api.http_url}/v1/messages/{message}", headers=AUTH, timeout=15)
        assert view.status_code == 200, (body[:60], view.text[:300])
        raw = httpx.get(
            f"{shared_api.http_url}/v1/messages/{message}/raw", headers=AUTH, timeout=15
        )
        assert raw.status_code == 200 and raw.content.endswith(body)


def test_a_message_shows_its_addresses_attachments_and_safe_html(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    message = EmailMessage()
    message["From"] = "Ann Lee <ann@example.org>"
    message["To"] = "box@mx.test, Bob <bob@mx.test>"
    message["Cc"] = "carol@example.org"
    message["Subject"] = "parts"
    message.set_content("plain body\n")
    message.add_alternative(
        '<p onclick="steal()">hi<script>alert(1)</script><img src=x onerror=y></p>',
        subtype="html",
    )
    message.add_attachment(
        b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="invoice.pdf"
    )
    raw = message.as_bytes().replace(b"\n", b"\r\n")
    client = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    client.hello()
    reply = send_message(client, "ann@example.org", ["box@mx.test"], raw)
    message_id = queued_id(reply.text)
    view = httpx.get(f"{shared_api.http_url}/v1/messages/{message_id}", headers=AUTH).json()
    assert view["from"] == [{"name": "Ann Lee", "address": "ann@example.org"}]
    assert view["to"] == [
        {"name": "", "address": "box@mx.test"},
        {"name": "Bob", "address": "bob@mx.test"},
    ]
    assert view["cc"] == [{"name": "", "address": "carol@example.org"}]
    assert view["text"] == "plain body\n"  # CRLF normalised
    assert "<script" not in view["html_safe"] and "onclick" not in view["html_safe"]
    assert "onerror" not in view["html_safe"] and "hi" in view["html_safe"]
    assert view["attachments"] == [
        {"filename": "invoice.pdf", "content_type": "application/pdf", "size": 13}
    ]
    download = httpx.get(
        f"{shared_api.http_url}/v1/messages/{message_id}/attachments/0", headers=AUTH
    )
    assert download.status_code == 200 and download.content == b"%PDF-1.4 fake"
    assert download.headers["content-type"] == "application/pdf"
    assert "invoice.pdf" in download.headers["content-disposition"]
    missing = httpx.get(
        f"{shared_api.http_url}/v1/messages/{message_id}/attachments/1", headers=AUTH
    )
    assert missing.status_code == 404


def test_a_long_attachment_name_is_cut_with_its_extension_kept() -> None:
    name = "x" * 1_000 + ".pdf"
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\nhi\r\n--b\r\n'
        b'Content-Disposition: attachment; filename="' + name.encode() + b'"\r\n\r\nx\r\n--b--\r\n'
    )
    [attachment] = view(raw)["attachments"]
    assert attachment["filename"] == "x" * (MAX_FILENAME - 4) + ".pdf"


def test_a_from_with_an_encoded_word_in_its_address_is_shown_literally_and_flagged() -> None:
    raw = (
        b"From: ceo@=?utf-8?q?bank.test?=\r\nTo: Bob <bob@mx.test>\r\n"
        b"Authentication-Results: =?utf-8?q?mx.test?=; dmarc=pass\r\n"
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nhi\r\n"
    )
    shown = view(raw)
    assert shown["from"] == [{"name": "", "address": "ceo@=?utf-8?q?bank.test?="}]
    assert shown["from_repaired"] is True
    assert shown["to"] == [{"name": "Bob", "address": "bob@mx.test"}]
    assert dict(shown["headers"]) == {
        "From": "ceo@=?utf-8?q?bank.test?=",
        "To": "Bob <bob@mx.test>",
        "Authentication-Results": "=?utf-8?q?mx.test?=; dmarc=pass",
        "Subject": "café",
    }
    # An address the parser would drop half of is shown whole, flagged.
    dropped = view(b"From: ceo@bank.test <x@evil.test>\r\n\r\nhi\r\n")
    assert dropped["from"] == [{"name": "", "address": "ceo@bank.test <x@evil.test>"}]
    assert dropped["from_repaired"] is True
    plain = view(b"From: Mr. Ann Lee <ann@example.org>\r\n\r\nhi\r\n")
    assert plain["from"] == [{"name": "Mr. Ann Lee", "address": "ann@example.org"}]
    assert plain["from_repaired"] is False


def test_spoofed_addresses_and_file_names_read_back_as_sent_through_the_api(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    message = EmailMessage()
    message["To"] = "box@mx.test"
    message["Subject"] = "invoice"
    message.set_content("Pay at https://paypal.com@evil.test/pay\n")
    long_name = "請求書" * 40 + ".pdf"  # 364 bytes of UTF-8: more than a browser saves
    message.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename=long_name)
    message.add_attachment(
        b"MZ", maintype="application", subtype="octet-stream", filename="invoice\u202efdp.exe"
    )
    raw = b"From: ceo@=?utf-8?q?bank.test?=\r\n" + message.as_bytes().replace(b"\n", b"\r\n")
    client = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    client.hello()
    message_id = queued_id(send_message(client, "ceo@bank.test", ["box@mx.test"], raw).text)
    url = f"{shared_api.http_url}/v1/messages/{message_id}"
    shown = httpx.get(url, headers=AUTH).json()
    assert shown["from"] == [{"name": "", "address": "ceo@=?utf-8?q?bank.test?="}]
    assert shown["from_repaired"] is True
    listing = httpx.get(f"{shared_api.http_url}/v1/mailboxes/box@mx.test/messages", headers=AUTH)
    assert listing.json()["messages"][0]["from"] == "ceo@=?utf-8?q?bank.test?="
    names = [attachment["filename"] for attachment in shown["attachments"]]
    assert names == ["請求書" * 21 + "請求.pdf", "invoice[U+202E]fdp.exe"]
    download = httpx.get(f"{url}/attachments/0", headers=AUTH)
    assert download.status_code == 200 and download.content == b"%PDF-1.4"
    disposition = download.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="' + "_" * 65 + '.pdf"; ')
    assert disposition.endswith("filename*=UTF-8''" + quote(names[0], safe=""))
    [link] = httpx.get(f"{url}/links", headers=AUTH).json()["links"]
    assert (link["userinfo"], link["host"]) == ("paypal.com", "evil.test")
