"""The host's gate: one process accepts every connection, judges it before the banner and
hands an admitted socket to a worker (Postfix's postscreen handing sockets to smtpd).

It binds the SMTP address, accepts, reads the PROXY header itself for trusted proxies,
asks admission (the blocklist cache and the host's one accountant: caps per client and in
all, connection rate, refusals toward an auto-ban) and writes a refusal itself: no worker
is asked, so refusals stay cheap and never wait on a busy or dead worker. An admitted
connection goes, with its identity, to the worker chosen by a hash of its client key, so
every connection of one client meets the same worker and the rates and violation counts
held there are exact for the host. Workers report each close back; a worker that dies is
restarted (receiver.workers) and every slot it held is given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import zlib
from collections import Counter
from collections.abc import Callable

from receiver import replies
from receiver.door import channel, proxy
from receiver.door.admission import Admission, Refusal
from receiver.door.channel import Handoff
from receiver.gate import SHUTDOWN_REFUSAL, Network, from_trusted_proxy
from receiver.telemetry.events import emit
from receiver.telemetry.recorder import Telemetry

WORKER_BUSY = Refusal(replies.TOO_MANY_CONNECTIONS, "worker_busy")
ACCEPTS_PER_WAKEUP = 256  # then the loop serves the channels (closes) before more accepts


class WorkerEnd:
    """The gate's side of one worker: its channel and the connections it holds."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.name = f"w{index}"
        self.channel: socket.socket | None = None
        self.held: Counter[str] = Counter()  # client key -> connections handed to it
        self.ready = False
        self.reason = "starting"
        self.metrics = ""
        self.status_at = 0.0

    @property
    def up(self) -> bool:
        return self.channel is not None


class _Pending:
    """A trusted proxy's connection whose PROXY header is still arriving."""

    __slots__ = ("buffer", "conn", "ip", "timer")

    def __init__(self, conn: socket.socket, ip: str) -> None:
        self.conn = conn
        self.ip = ip
        self.buffer = bytearray()
        self.timer: asyncio.TimerHandle | None = None


class HostGate:
    """Accept, judge, refuse or hand over; count closes; give back a dead worker's slots."""

    def __init__(
        self,
        admission: Admission,
        telemetry: Telemetry,
        workers: list[WorkerEnd],
        *,
        trusted_proxies: tuple[Network, ...] = (),
        proxy_timeout: float = 5.0,
        on_ban: Callable[[str, str, float], None] = lambda _k, _r, _t: None,
        on_worker_gone: Callable[[WorkerEnd], None] = lambda _end: None,
    ) -> None:
        self.admission = admission
        self.telemetry = telemetry
        self.workers = workers
        self.trusted = trusted_proxies
        self.proxy_timeout = proxy_timeout
        self.draining = False
        self.loop = asyncio.get_running_loop()
        self.listener: socket.socket | None = None
        self._pending: set[_Pending] = set()
        self.on_ban = on_ban  # the host's blocklist: written once, for the host
        self.on_worker_gone = on_worker_gone  # the supervisor restarts it

    # --- accepting ------------------------------------------------------------------

    def listen(self, host: str, port: int, backlog: int = 4096) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(backlog)
        listener.setblocking(False)
        self.listener = listener
        self.loop.add_reader(listener.fileno(), self._accept)

    def close(self) -> None:
        if self.listener is not None:
            self.loop.remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None
        for pending in list(self._pending):
            self._drop(pending)

    def _accept(self) -> None:
        listener = self.listener
        assert listener is not None
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # out of descriptors: the backlog waits meanwhile
                emit("accept_failed", error=type(error).__name__)
                return
            self._judge(conn, address[0])

    def _judge(self, conn: socket.socket, ip: str) -> None:
        conn.setblocking(False)
        admission = self.admission
        if self.draining:
            self._refuse(conn, ip, SHUTDOWN_REFUSAL)
        elif from_trusted_proxy(ip, self.trusted):
            refusal = admission.connect_unkeyed()
            if refusal is not None:
                self._refuse(conn, ip, refusal)
            else:
                self._await_header(_Pending(conn, ip))
        else:
            key, refusal = admission.connect(ip)
            if refusal is not None:
                self._refuse(conn, key, refusal)
            else:
                self._hand_over(conn, key, ip, b"")

    def _refuse(self, conn: socket.socket, key: str, refusal: Refusal) -> None:
        """The refusal is written here, from memory: no worker is involved."""
        with contextlib.suppress(OSError):
            conn.send(refusal.reply.line())  # a fresh socket's buffer always has room
        conn.close()
        self.telemetry.on_refused(key, refusal.reason)

    # --- a trusted proxy's header ---------------------------------------------------

    def _await_header(self, pending: _Pending) -> None:
        self._pending.add(pending)
        pending.timer = self.loop.call_later(self.proxy_timeout, self._header_late, pending)
        self.loop.add_reader(pending.conn.fileno(), self._header_input, pending)

    def _header_input(self, pending: _Pending) -> None:
        try:
            data = pending.conn.recv(proxy.MAX_HEADER)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the proxy closed before its header: nothing to say
            self._drop(pending)
            self.admission.release(None)
            return
        pending.buffer += data
        length = proxy.header_length(pending.buffer)
        if length is None:
            if len(pending.buffer) < proxy.MAX_HEADER:
                return
            length = proxy.BAD
        self._detach(pending)
        self._identified(pending, length)

    def _identified(self, pending: _Pending, length: int) -> None:
        valid, client = (False, None)
        if length > 0:
            valid, client = proxy.client_address(bytes(pending.buffer[:length]))
        if not valid:
            self.admission.release(None)
            self.telemetry.on_refused(pending.ip, "bad_proxy_header")
            pending.conn.close()
            return
        # A v2 LOCAL command (the proxy's own health check) names no client: it is
        # judged as the proxy itself, as a session would.
        ip = client or pending.ip
        if self.draining:  # the header came after the stop: as a newcomer would hear
            self.admission.release(None)
            self._refuse(pending.conn, ip, SHUTDOWN_REFUSAL)
            return
        key, refusal = self.admission.identify(ip)
        if refusal is not None:
            self.admission.release(None)
            self._refuse(pending.conn, key, refusal)
            return
        self._hand_over(pending.conn, key, ip, bytes(pending.buffer[length:]))

    def _header_late(self, pending: _Pending) -> None:
        self._drop(pending)
        self.admission.release(None)
        self.telemetry.on_refused(pending.ip, "bad_proxy_header")

    def _detach(self, pending: _Pending) -> None:
        self._pending.discard(pending)
        self.loop.remove_reader(pending.conn.fileno())
        if pending.timer is not None:
            pending.timer.cancel()

    def _drop(self, pending: _Pending) -> None:
        self._detach(pending)
        pending.conn.close()

    # --- hand-over ------------------------------------------------------------------

    def worker_for(self, key: str) -> WorkerEnd | None:
        """The worker every connection of `key` goes to; the next one up while it is
        being restarted (its rate tables died with it anyway)."""
        count = len(self.workers)
        first = zlib.crc32(key.encode()) % count
        for step in range(count):
            end = self.workers[(first + step) % count]
            if end.up:
                return end
        return None

    def _hand_over(self, conn: socket.socket, key: str, ip: str, early: bytes) -> None:
        end = self.worker_for(key)
        sent = False
        if end is not None and end.channel is not None:
            message = Handoff(key, ip, early).encode()
            try:
                socket.send_fds(end.channel, [message], [conn.fileno()])
                sent = True
            except OSError:  # full (the worker is not reading) or gone
                sent = False
        if not sent:
            self.admission.release(key)
            self._refuse(conn, key, WORKER_BUSY)
            return
        assert end is not None
        end.held[key] += 1
        conn.close()  # the worker holds its own descriptor now

    # --- from the workers -----------------------------------------------------------

    def attach(self, end: WorkerEnd, gate_end: socket.socket) -> None:
        end.channel = gate_end
        end.ready, end.reason, end.status_at = False, "starting", self.loop.time()
        self.loop.add_reader(gate_end.fileno(), self._from_worker, end)
        if self.admission.stressed:
            self._send(end, channel.STRESS + b"1")

    def broadcast_stress(self, stressed: bool) -> None:
        for end in self.workers:
            self._send(end, channel.STRESS + (b"1" if stressed else b"0"))

    def _send(self, end: WorkerEnd, message: bytes) -> None:
        if end.channel is not None:
            with contextlib.suppress(OSError):
                end.channel.send(message)

    def _from_worker(self, end: WorkerEnd) -> None:
        gate_end = end.channel
        if gate_end is None:
            return
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                message = gate_end.recv(channel.MAX_STATUS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            if not message:
                self.worker_gone(end)
                return
            self._on_message(end, message)

    def _on_message(self, end: WorkerEnd, message: bytes) -> None:
        kind = message[:1]
        if kind == channel.CLOSED:
            for key in channel.closed_keys(message):
                if end.held[key] > 0:  # never below what it was given
                    end.held[key] -= 1
                    if not end.held[key]:
                        del end.held[key]
                    self.admission.release(key)
        elif kind == channel.BAN:
            ban = channel.payload(message)
            who, why, ttl = ban.get("key"), ban.get("reason"), ban.get("ttl")
            if isinstance(who, str) and isinstance(why, str) and isinstance(ttl, int | float):
                self.on_ban(who, why, float(ttl))
        elif kind == channel.STATUS:
            status = channel.payload(message)
            end.ready = status.get("ready") is True
            end.reason = str(status.get("reason", ""))[:200]
            end.metrics = str(status.get("metrics", ""))
            end.status_at = self.loop.time()

    def worker_gone(self, end: WorkerEnd) -> None:
        """Its connections died with it: every slot it held is given back at once."""
        if end.channel is not None:
            self.loop.remove_reader(end.channel.fileno())
            end.channel.close()
            end.channel = None
        given = sum(end.held.values())
        for key, count in end.held.items():
            for _ in range(count):
                self.admission.release(key)
        end.held.clear()
        end.ready, end.reason, end.metrics = False, "restarting", ""
        emit("worker_gone", worker=end.name, slots=given)
        self.on_worker_gone(end)
