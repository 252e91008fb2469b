"""Messages for the render bench and the API's tests: an everyday mix, and the crafted
ones that once cost the API a gigabyte or its whole render pool (issue: bounded rendering).
Each is at most what the receiver accepts with default limits."""

from __future__ import annotations

import base64
import random
from email.message import EmailMessage

MIB = 1024 * 1024


def crlf(message: EmailMessage) -> bytes:
    return message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def encoded_word_bomb(words: int = 6_000) -> bytes:
    """A Subject of `words` folded encoded words: ~1 GB in the stdlib header registry."""
    subject = b"\r\n ".join([b"=?utf-8?q?a?="] * words)
    return b"From: a@example.org\r\nSubject: " + subject + b"\r\n\r\nbomb\r\n"


def address_bomb(words: int = 6_000) -> bytes:
    """The same in From:, where the registry must parse addresses."""
    name = b"\r\n ".join([b"=?utf-8?q?a?="] * words)
    return b"From: " + name + b" <a@example.org>\r\nSubject: address bomb\r\n\r\nx\r\n"


def punycode_body(size: int = 200_000) -> bytes:
    """A body in charset=punycode: quadratic to decode with Python's codec."""
    body = b"a" * size + b"-" + b"z" * 64
    head = b"Subject: puny\r\nContent-Type: text/plain; charset=punycode\r\n\r\n"
    return head + b"\r\n".join(body[i : i + 900] for i in range(0, len(body), 900)) + b"\r\n"


def punycode_subject(size: int = 900) -> bytes:
    return b"Subject: =?punycode?q?" + b"a" * size + b"-zz?=\r\n\r\nx\r\n"


def smtputf8(n: int = 0) -> bytes:
    """RFC 6532 mail: raw UTF-8 in From, To, Cc and Subject."""
    return (
        "From: Jörg Müller <jörg@bücher.example>\r\nTo: Zoë <zoë@mx.test>\r\n"
        f"Cc: 李 <li@例え.jp>\r\nSubject: Grüße {n} ✓\r\n\r\nHallo, wie geht's?\r\n"
    ).encode()


def big_attachment(size: int = 7_000_000, seed: int = 7) -> tuple[bytes, bytes]:
    """(the message, the attachment): base64 makes a 7 MB file a ~9.6 MB message."""
    data = random.Random(seed).randbytes(size)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.org", "b@mx.test", "big"
    message.set_content("see attached\n")
    message.add_attachment(data, maintype="application", subtype="octet-stream", filename="big.bin")
    return crlf(message), data


def typical(n: int) -> bytes:
    """Everyday mail: plain, HTML alternative, a small attachment, an encoded subject."""
    message = EmailMessage()
    message["From"] = f"Sender {n} <s{n}@example.org>"
    message["To"] = "box@mx.test"
    message["Subject"] = f"Ihre Bestellung Nr. {n} ist unterwegs ✓"
    message.set_content("Hello,\n\n" + "your order is on its way.\n" * (5 + n % 40))
    if n % 2:
        message.add_alternative(f"<p>Hello <b>{n}</b></p>" * (1 + n % 30), subtype="html")
    if n % 3 == 0:
        message.add_attachment(
            random.Random(n).randbytes(20_000 + 1000 * (n % 50)),
            maintype="application",
            subtype="pdf",
            filename=f"invoice-{n}.pdf",
        )
    return crlf(message)


def bombs() -> dict[str, bytes]:
    """The crafted messages, by name."""
    return {
        "encoded_words_6000": encoded_word_bomb(6_000),
        "encoded_words_14000": encoded_word_bomb(14_000),
        "address_words_6000": address_bomb(6_000),
        "punycode_body": punycode_body(),
        "punycode_subject": punycode_subject(),
        "nested_3000": b"Subject: deep\r\n"
        + b"".join(
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (n, n)
            for n in range(3000)
        ),
        "parameters_99_parts": parameter_bomb(),
        "big_attachment": big_attachment()[0],
    }


def css_bomb() -> bytes:
    """HTML whose `<style>` and `style` attributes fill every budget of the CSS sanitiser
    (api/safehtml.py) with its costliest input, one-character tokens: the most reading
    one message's CSS can cost (base64, so no line is longer than SMTP allows). For the
    render bench only: a render of it takes most of a second, which the contract tests'
    fuzzer would pay again and again."""
    sheet = b"<style>" + b"a{b:(" * 30_000 + b"</style>"  # 150 KB: 128 KiB are read
    attributes = (b"<p style='" + b"(" * 8_000 + b"'>x</p>") * 20  # 160 KB: 128 KiB read
    body = base64.encodebytes(b"<html><body>" + sheet + attributes + b"</body></html>")
    return (
        b"Subject: css budgets\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + body.replace(b"\n", b"\r\n")
    )


def parameter_bomb(parts: int = 99) -> bytes:
    """Parts whose Content-Type carries 8 KB of RFC 2231 parameters: 0.4 s each in the
    header registry (39 s for the message) before MIME headers had a size cap."""
    params = b"; ".join(b"a%d*%d*=x" % (i, j) for i in range(30) for j in range(30))[:8000]
    part = b"--b\r\nContent-Type: text/plain; " + params + b"\r\n\r\nx\r\n"
    head = b'Subject: parameters\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    return head + part * parts + b"--b--\r\n"


def dashes(size: int = 32_000) -> bytes:
    """A text body of `A-A-A-...` after the word "code": 3.5 s in the links' code pattern
    while its lookahead was unbounded (quadratic)."""
    body = b"Your code:\r\n" + b"\r\n".join([b"A-" * 400] * (size // 800)) + b"\r\n"
    return b"Subject: dashes\r\nContent-Type: text/plain\r\n\r\n" + body


def linked_images(count: int = 100_000) -> bytes:
    """One link around `count` images: the anchor text was summed again at every text node
    (quadratic: the render deadline at 100,000)."""
    html = b"<a href='https://example.org/'>" + b"<img>x" * count + b"</a>"
    head = b"Subject: images\r\nContent-Type: text/html\r\n\r\n"
    return head + b"\r\n".join(html[i : i + 900] for i in range(0, len(html), 900)) + b"\r\n"


def semicolons(parts: int = 29, count: int = 1_000) -> bytes:
    """Parts whose Content-Type has `count` valueless parameters (`;a` each: ~60 KB in all,
    a small message): 0.5 s a view before parameters were counted before parsing."""
    part = b"--b\r\nContent-Type: text/plain" + b";a" * count + b"\r\n\r\nx\r\n"
    head = b'Subject: semicolons\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    return head + part * parts + b"--b--\r\n"
