"""STARTTLS for the receiver (RFC 3207): the server context, the certificate (configured,
or a self-signed one made on first start, as Debian's snakeoil is for Postfix), its reload,
and the handshake budget.

A TLS handshake costs the server far more CPU than a refused connection, so handshakes are
a resource like connections: a cap on concurrent handshakes (global, per client and per
network), a per-client handshake rate, deadlines, and a failed handshake counts as a client
error. A slot is taken only once the client's complete ClientHello has arrived (seen with
MSG_PEEK, nothing read): a client that says STARTTLS and then nothing holds no slot, and
gets `tls_hello_timeout` to start. EHLO always offers STARTTLS and a client within its
handshake rate always gets 220: when every slot is busy, its ClientHello waits for one
(within the same deadline) instead of being turned away or downgraded to cleartext. The
handshake itself runs through the event loop's own `start_tls` (uvloop included).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import socket
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailstore.message import TlsInfo
from receiver.door.accountant import ConnectionCounts
from receiver.door.keys import network_key
from receiver.telemetry.events import emit

# TLS 1.2 and 1.3 only; forward-secret AEAD suites (Mozilla's "intermediate" profile).
# TLS 1.3 suites are not set by set_ciphers: OpenSSL's defaults are all AEAD.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS:!SHA1"
SELF_SIGNED = "snakeoil.pem"  # key and certificate in one file: replaced atomically
SELF_SIGNED_ECDSA = "snakeoil-ecdsa.pem"  # beside it: cheaper handshakes for most clients
SELF_SIGNED_DAYS = 3650
RATE = "rate"
NO_HELLO = "no_hello"
BUSY = "busy"
GONE = "gone"
# TLS record layer (RFC 8446 5.1): type 22 is a handshake record; a 5-byte header carries
# the length of the fragment (at most 2^14 + 2048 octets in any version).
_HANDSHAKE_RECORD = 0x16
_RECORD_HEADER = 5
_MAX_RECORD = _RECORD_HEADER + 16384 + 2048
_POLL_FIRST = 0.0005  # the ClientHello follows our 220 within a round trip
_POLL_MAX = 0.05


def server_context(cert: Path, key: Path | None, extra: tuple[Path, ...] = ()) -> ssl.SSLContext:
    """The receiver's server-side context. Raises OSError/ssl.SSLError naming the problem.

    `extra` are more chains of other key types (key and certificate in one file each):
    OpenSSL then picks, per client, the one its signature algorithms allow; an ECDSA
    signature costs the server a fraction of an RSA one.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_SINGLE_ECDH_USE
    context.load_cert_chain(str(cert), str(key) if key is not None else None)
    for chain in extra:
        context.load_cert_chain(str(chain))
    return context


def self_signed(data_dir: Path, hostname: str, *, ecdsa: bool = False) -> Path:
    """The self-signed certificate for `hostname` under `data_dir/tls/`, made if missing:
    RSA 2048 (every client takes it), or ECDSA P-256 with `ecdsa`.

    One PEM file holds the key and the certificate, written to a temporary file and renamed
    into place, so receivers starting together never read a key of another certificate.
    """
    path = data_dir / "tls" / (SELF_SIGNED_ECDSA if ecdsa else SELF_SIGNED)
    if path.exists():
        return path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if ecdsa
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = datetime.datetime.now(datetime.UTC)
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        alt = x509.DNSName(hostname)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + cert.public_bytes(serialization.Encoding.PEM)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=".snakeoil-") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(pem)
    os.replace(out.name, path)
    return path


@dataclass(frozen=True)
class TlsSettings:
    cert: Path
    key: Path | None  # None: the key is in the certificate file
    self_signed: bool = False
    extra: tuple[Path, ...] = ()  # chains of other key types, key and certificate in each


class Certificates:
    """The current server context; reloaded when the certificate or key file changes.

    Sessions take the context at STARTTLS time, so a reload never touches connections
    already open: they keep the certificate they negotiated with.
    """

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self.context = server_context(settings.cert, settings.key, settings.extra)
        self._stamp = self._files_stamp()

    def _files_stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for path in (self.settings.cert, self.settings.key, *self.settings.extra):
            if path is not None:
                try:
                    info = path.stat()
                except OSError:
                    return ()
                stamps.append((info.st_mtime_ns, info.st_size))
        return tuple(stamps)

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed; a broken new pair keeps the old one."""
        stamp = self._files_stamp()
        if not stamp or stamp == self._stamp:
            return False
        try:
            context = server_context(self.settings.cert, self.settings.key, self.settings.extra)
        except (OSError, ssl.SSLError) as error:
            # Logged once per change of the files, never per connection.
            emit("tls_reload_failed", error=type(error).__name__)
            self._stamp = stamp
            return False
        self.context = context
        self._stamp = stamp
        return True


class Handshakes:
    """The handshake budget: concurrent handshakes (all, per client, per network) and a
    per-client rate. Counts exist only while a handshake runs, so the tables are bounded
    by the global cap."""

    def __init__(
        self,
        certificates: Certificates,
        *,
        max_total: int,
        max_per_client: int,
        max_per_network: int,
        timeout: float,
        hello_timeout: float,
        take_rate: Callable[[str], bool],
    ) -> None:
        self.certificates = certificates
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.max_per_network = max_per_network
        self.timeout = timeout
        self.hello_timeout = hello_timeout
        self._take_rate = take_rate
        self.clients = ConnectionCounts()  # handshakes running: in all and per client
        self.networks = ConnectionCounts()  # ... and per network (its total is unused)

    def begin(self, key: str, allowed: bool) -> str | None:
        """At STARTTLS: None to say 220, or `RATE` past the client's handshake rate."""
        if not allowed and not self._take_rate(key):
            return RATE
        return None

    def acquire(self, key: str, allowed: bool) -> bool:
        """Take a slot for a client whose ClientHello is complete; False if none is free."""
        if self.clients.total >= self.max_total:
            return False
        network = network_key(key)
        if not allowed and (
            self.clients.of(key) >= self.max_per_client
            or self.networks.of(network) >= self.max_per_network
        ):
            return False
        self.clients.acquire(key)
        self.networks.acquire(network)
        return True

    def end(self, key: str) -> None:
        """Give back the slot `acquire` took."""
        self.clients.release(key)
        self.networks.release(network_key(key))

    async def hello(
        self, transport: asyncio.Transport, key: str, allowed: bool, alive: Callable[[], bool]
    ) -> str | None:
        """Wait for a complete ClientHello, then for a slot; None once one is held.

        Otherwise why not: `NO_HELLO` (nothing complete within the hello deadline), `BUSY`
        (no slot freed up within it) or `GONE` (the client left, or the session closed).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hello_timeout
        fd = _fileno(transport)
        delay = _POLL_FIRST
        hello = False
        while alive() and fd is not None:
            if not hello:
                state = _peek_record(fd)
                if state is None:
                    return GONE
                hello = state
            if hello and self.acquire(key, allowed):
                return None
            if loop.time() >= deadline:
                return BUSY if hello else NO_HELLO
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
        return GONE

    async def upgrade(
        self, transport: asyncio.Transport, protocol: asyncio.Protocol
    ) -> asyncio.Transport:
        """Run the server side of the handshake on `transport` (raises on failure)."""
        loop = asyncio.get_running_loop()
        secure = await loop.start_tls(
            transport,
            protocol,
            self.certificates.context,
            server_side=True,
            ssl_handshake_timeout=self.timeout,
        )
        assert secure is not None
        return secure


def _fileno(transport: asyncio.Transport) -> int | None:
    sock = transport.get_extra_info("socket")
    try:
        return int(sock.fileno()) if sock is not None else None
    except (OSError, ValueError):
        return None


def _peek_record(fd: int) -> bool | None:
    """Whether the first TLS record waiting on `fd` is complete (nothing is consumed).

    True also for bytes that are not a handshake record at all: the handshake then fails
    at once, as it should. None when the client has closed or the socket failed.
    """
    sock = socket.socket(fileno=fd)
    try:
        head = sock.recv(_MAX_RECORD, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return None
    finally:
        sock.detach()
    if not head:
        return None  # end of stream
    if head[0] != _HANDSHAKE_RECORD:
        return True
    if len(head) < _RECORD_HEADER:
        return False
    return len(head) >= _RECORD_HEADER + int.from_bytes(head[3:5], "big")


def describe(transport: asyncio.BaseTransport) -> TlsInfo:
    """(TLS version, cipher name) of an upgraded transport."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return TlsInfo("unknown", "unknown")
    cipher = ssl_object.cipher()
    return TlsInfo(str(ssl_object.version() or "unknown"), str(cipher[0]) if cipher else "unknown")
