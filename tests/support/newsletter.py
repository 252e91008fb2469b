"""A styled newsletter as senders write them: a `<style>` block (classes, a media query,
a comment, a web font and an `@import` that must go), inline styles, `bgcolor` tables,
`<font>`, a logo by `cid:` (a PNG part of a multipart/related), one remote image (a read
receipt, which must not be fetched) and a link; with the colours a test samples."""

from __future__ import annotations

import base64
import struct
import zlib

# The colours a reader should see, by element id: each comes from a different mechanism.
HEADER_BG = (0x1D, 0x3F, 0x72)  # <td bgcolor>
BUTTON_BG = (0xE4, 0x57, 0x2E)  # a <style> class rule
PANEL_BG = (0xFF, 0xF4, 0xD6)  # a style attribute
FOOTER_BG = (0x2B, 0x9A, 0x48)  # <table bgcolor> under a <style> media query
LOGO = (0x8E, 0x24, 0xAA)  # the cid: PNG's one colour
BACKDROP = (0xEC, 0xEF, 0xF3)  # <body bgcolor>, around the 600 px table
LOGO_ID = "logo.7f3a@news.shop.example"


def png(rgb: tuple[int, int, int], size: int = 48) -> bytes:
    """A `size`-pixel square PNG of one colour (RFC 2083), no library needed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


def _hex(rgb: tuple[int, int, int]) -> str:
    red, green, blue = rgb
    return f"#{red:02x}{green:02x}{blue:02x}"


def html(logo_src: str, remote: str, link: str) -> str:
    """The HTML part; `logo_src` is `cid:...` as sent, or a data: URL for a reference."""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Weekly deals</title>
<style type="text/css">
@import url("{remote}/import.css");
@font-face {{ font-family: Brand; src: url("{remote}/brand.woff2"); }}
/* layout */
body {{ margin: 0; padding: 0; }}
.wrap {{ width: 100%; max-width: 600px; font-family: Helvetica, Arial, sans-serif; }}
.button {{ background-color: {_hex(BUTTON_BG)}; color: #ffffff !important; padding: 14px 28px;
  border-radius: 4px; display: inline-block; font-weight: bold; text-decoration: none; }}
.hero {{ background: {_hex(PANEL_BG)} url("{remote}/hero.jpg") no-repeat; }}
@media only screen and (max-width: 480px) {{ .wrap {{ width: 100% !important; }} }}
</style></head>
<body bgcolor="{_hex(BACKDROP)}" style="margin: 0; padding: 12px 0;">
<table class="wrap" width="600" cellpadding="0" cellspacing="0" border="0" align="center">
<tr><td id="header" bgcolor="{_hex(HEADER_BG)}" height="90" style="padding: 16px;">
  <img id="logo" src="{logo_src}" width="48" height="48" alt="Shop" style="display:block">
</td></tr>
<tr><td id="panel" style="background-color: {_hex(PANEL_BG)}; padding: 24px 16px;
  border: 1px solid #e0d6b8; color: #333333; font-size: 16px; line-height: 24px;">
  <h1 style="margin: 0 0 12px; font-size: 24px; color: {_hex(HEADER_BG)};">This week only</h1>
  <p style="margin: 0 0 20px;">Everything in the <font color="#aa0000">red tag</font> sale
  is 30% off until Sunday.</p>
  <a id="cta" class="button" href="{link}">Shop the sale</a>
  <img src="{remote}/open.gif" width="1" height="1" alt="">
</td></tr>
<tr><td><table id="footer" width="100%" bgcolor="{_hex(FOOTER_BG)}" cellpadding="12">
  <tr><td style="color: #ffffff; font-size: 12px;">You receive this because you signed up.
  </td></tr></table></td></tr>
</table>
</body></html>"""


def message(mailbox: str, remote: str, link: str) -> bytes:
    """The whole message: multipart/alternative (text; multipart/related (HTML; logo))."""
    logo = base64.encodebytes(png(LOGO)).decode().replace("\n", "\r\n")
    body = html(f"cid:{LOGO_ID}", remote, link).replace("\n", "\r\n")
    return (
        f"From: Shop <news@shop.example>\r\nTo: {mailbox}\r\nSubject: Weekly deals\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"This week only: 30% off. {link}\r\n"
        '--alt\r\nContent-Type: multipart/related; boundary="rel"; type="text/html"\r\n\r\n'
        "--rel\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        f"{body}\r\n"
        "--rel\r\nContent-Type: image/png; name=logo.png\r\nContent-Transfer-Encoding: base64\r\n"
        f"Content-ID: <{LOGO_ID}>\r\nContent-Disposition: inline; filename=logo.png\r\n\r\n"
        f"{logo}\r\n--rel--\r\n--alt--\r\n"
    ).encode()
