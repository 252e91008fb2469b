"""A minimal asyncio SMTP client: exactly what the scenarios need, every wait bounded."""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass

_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
MAX_REPLY_LINES = 100


def client_context() -> ssl.SSLContext:
    """A client context for an MX's certificate: encryption, no verification (RFC 7435)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


CLIENT_TLS = client_context()


class Closed(Exception):
    """The server closed the connection (or reset it) before a complete reply."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str

    @property
    def key(self) -> str:
        """`421 4.7.0` when the reply carries an enhanced status code, else `421`."""
        first = self.text.split(" ", 1)[0]
        return f"{self.code} {first}" if _ENHANCED.match(first) else str(self.code)

    @property
    def ok(self) -> bool:
        return self.code < 400


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int, source: str | None, within: float) -> Connection:
        local = (source, 0) if source else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=local, limit=65_536), within
        )
        return cls(reader, writer)

    async def reply(self, within: float) -> Reply:
        lines: list[str] = []
        async with asyncio.timeout(within):
            while len(lines) < MAX_REPLY_LINES:
                try:
                    raw = await self.reader.readline()
                except (ConnectionError, asyncio.LimitOverrunError, ValueError) as error:
                    raise Closed(str(error)) from None
                if not raw.endswith(b"\n"):
                    raise Closed("connection closed")
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if len(line) < 3 or not line[:3].isdigit():
                    raise Closed(f"not an SMTP reply: {line[:60]!r}")
                lines.append(line[4:])
                if len(line) == 3 or line[3] != "-":
                    return Reply(int(line[:3]), "\n".join(lines))
        raise Closed("reply too long")

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def command(self, line: str, within: float) -> Reply:
        self.send(line.encode() + b"\r\n")
        await self.drain(within)
        return await self.reply(within)

    async def drain(self, within: float) -> None:
        try:
            await asyncio.wait_for(self.writer.drain(), within)
        except ConnectionError as error:
            raise Closed(str(error)) from None

    async def starttls(self, within: float) -> Reply:
        """STARTTLS and, on 220, the handshake (certificates are not checked: an MX's is
        often self-signed, and opportunistic TLS does not check either, RFC 7435)."""
        reply = await self.command("STARTTLS", within)
        if reply.code == 220:
            try:
                await asyncio.wait_for(
                    self.writer.start_tls(CLIENT_TLS, server_hostname=None), within
                )
            except (ssl.SSLError, ConnectionError) as error:
                raise Closed(f"TLS handshake failed: {error}") from None
        return reply

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except (TimeoutError, ConnectionError, OSError):
            pass


def message(sender: str, recipient: str, size: int, serial: int) -> bytes:
    """A well-formed message of about `size` bytes, dot-stuffing never needed."""
    head = (
        f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: flood {serial}\r\n"
        f"Message-ID: <{serial}.{id(sender)}@flood.test>\r\n\r\n"
    ).encode()
    line = b"x" * 70 + b"\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


async def transaction(
    conn: Connection, sender: str, recipient: str, data: bytes, within: float
) -> Reply:
    """MAIL, RCPT, DATA; the first refusal or the final reply to the message."""
    for line in (f"MAIL FROM:<{sender}>", f"RCPT TO:<{recipient}>", "DATA"):
        reply = await conn.command(line, within)
        if reply.code >= 400:
            if line == "DATA" or line.startswith("RCPT"):
                await conn.command("RSET", within)
            return reply
    conn.send(data + b".\r\n")
    await conn.drain(within)
    return await conn.reply(within)
