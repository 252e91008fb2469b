"""The malformed end-of-data sequences an SMTP smuggling test client tries: none may end
DATA, and none may reach the store as a bare CR or LF."""

from __future__ import annotations

MALFORMED_ENDINGS = [
    b"\n.\n",
    b"\r.\r",
    b"\r.\n",
    b"\n.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
]
