"""A raw-socket SMTP client for tests that need byte-level control (timing, bad input)."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from typing import ClassVar, Protocol

from flood.smtp import client_context as insecure_context  # no certificate check


@dataclass
class Reply:
    code: int
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class RawClient:
    """Line-oriented SMTP over a plain socket; `source` picks the client IP.

    Every client is closed at the end of the test that made it (see tests/conftest.py).
    """

    opened: ClassVar[list[RawClient]] = []

    def __init__(
        self, host: str, port: int, *, source: str | None = None, timeout: float = 10.0
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        RawClient.opened.append(self)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self._buffer = b""

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def cmd(self, line: str) -> Reply:
        self.send(line + "\r\n")
        return self.reply()

    def reply(self) -> Reply:
        lines = []
        while True:
            line = self._line()
            lines.append(line[4:])
            if len(line) < 4 or line[3] != "-":
                return Reply(int(line[:3]), lines)

    def _line(self) -> str:
        while b"\r\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by server; pending {self._buffer!r}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True once the server closes the connection (after any pending replies)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self._buffer += chunk
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def hello(self, name: str = "client.test") -> Reply:
        banner = self.reply()
        assert banner.code == 220, banner
        return self.cmd(f"EHLO {name}")

    def starttls(self, context: ssl.SSLContext | None = None) -> Reply:
        """STARTTLS and, on 220, the handshake (no certificate check unless `context`)."""
        reply = self.cmd("STARTTLS")
        if reply.code == 220:
            assert not self._buffer, "the server said more after 220"
            self.sock = (context or insecure_context()).wrap_socket(self.sock)
        return reply

    def close(self) -> None:
        self.sock.close()


class Listening(Protocol):
    host: str
    port: int


def smtp_from(
    receiver: Listening, source: str, local_hostname: str = "client.test"
) -> smtplib.SMTP:
    """smtplib talking to `receiver` from the loopback address `source` (a client of its
    own: a test's rates, caps and bans are its alone)."""
    return smtplib.SMTP(
        receiver.host, receiver.port, local_hostname=local_hostname, source_address=(source, 0)
    )


def send_message(client: RawClient, sender: str, recipients: list[str], body: bytes) -> Reply:
    """MAIL, RCPT..., DATA with dot-stuffing; returns the final reply after the dot."""
    assert client.cmd(f"MAIL FROM:<{sender}>").code == 250
    for rcpt in recipients:
        reply = client.cmd(f"RCPT TO:<{rcpt}>")
        assert reply.code == 250, reply
    assert client.cmd("DATA").code == 354
    stuffed = b"\r\n".join(
        (b"." + line if line.startswith(b".") else line) for line in body.split(b"\r\n")
    )
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    client.send(stuffed + b".\r\n")
    return client.reply()


def queued_id(reply_text: str) -> str:
    """The message id in `250 2.0.0 Ok: queued as <id>`."""
    return reply_text.rsplit(" ", 1)[-1]


def rss_kb(pid: int) -> int:
    """Resident set size of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_for(predicate: object, timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll `predicate()` until true or `timeout` seconds pass."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
