"""The dispatcher: follows new messages in the store, turns each into durable deliveries
for the endpoints registered for it, and sends them, retried with backoff.

It follows the `messages` change stream as the API's live push does (api.push.Hub), and
keeps its place (the stream's resume token) in the store, so messages that arrive while
it is down are picked up when it starts again. A delivery is written before its first
attempt, and an attempt only claims it for a lease (`due` moved past the attempt's
deadline): a dispatcher killed mid-attempt leaves it due again, and the next one sends it
again under the same `webhook-id` (at least once). Attempts are bounded in all
(`webhook_max_in_flight`) and per endpoint (`webhook_concurrency`; a delivery whose
endpoint is at its cap is not claimed). An endpoint that fails a whole schedule's worth of
attempts in a row is disabled, and the operator told (a `webhook_disabled` line, at most
one per summary interval, the rest folded into one summary line; and in the API).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pymongo.errors import OperationFailure, PyMongoError

from api.renderpool import Busy, RenderPool
from mailstore import MessageStore
from mailstore.connection import stop_if_cancelled
from mailstore.message import MessageDocument, MessageKey
from mailstore.webhooks import State, WebhookStore, delivery_id
from receiver.telemetry.events import emit
from receiver.telemetry.summary import SummaryLog
from webhooks import destination, payload, sender, signing
from webhooks.endpoints import Endpoint
from webhooks.limits import WebhookLimits, backoff
from webhooks.metrics import WebhookMetrics

# The embedded store answers an empty getMore at once: pace empty polls (20 a second when
# idle; on average half of it is added to a message's latency).
POLL = 0.05
IDLE = 0.25  # seconds between looks for due deliveries when nothing woke the loop
REFRESH = 1.0  # seconds the endpoints are cached for sending (disabled ones seen by then)
BATCH = 100  # messages read from the stream before the endpoints are looked at again
SAVE_EVERY = 0.5  # seconds between saves of the stream's resume token
SWEEP_EVERY = 30.0  # seconds between drops of deliveries past retention
CANDIDATES = 4  # due deliveries looked at per free slot (some may be at their cap)


class Dispatcher:
    def __init__(
        self,
        store: MessageStore,
        hooks: WebhookStore,
        limits: WebhookLimits,
        renderer: RenderPool,
        api_url: str,
        *,
        summary_interval: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.hooks, self.limits = store, hooks, limits
        self.renderer, self.api_url, self.clock = renderer, api_url.rstrip("/"), clock
        self.metrics = WebhookMetrics()
        self.http = sender.client(limits.webhook_max_in_flight)
        self.summary = SummaryLog(summary_interval)
        self.summary_interval = summary_interval
        self.endpoints: dict[str, Endpoint] = {}
        self._loaded = -1.0  # monotonic time of the last read of the endpoints
        self._read_at = 0.0  # the same moment by the clock messages are stamped with
        self._wake = asyncio.Event()
        self._busy: Counter[str] = Counter()  # attempts in flight per endpoint
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_alert = -1e9
        self.store_ok = False
        self.following = False  # the change stream is open: new messages are seen

    # --- endpoints ---------------------------------------------------------------------

    async def endpoints_now(self, since: float | None = None) -> dict[str, Endpoint]:
        """The registered endpoints: read at most `REFRESH` seconds ago, and (with `since`)
        read after that moment."""
        stale = time.monotonic() - self._loaded > REFRESH
        if stale or (since is not None and self._read_at < since):
            read_at = self.clock()
            found = await self.hooks.endpoints_page(self.limits.webhook_max_endpoints)
            self.endpoints = {e.id: e for e in map(Endpoint.read, found)}
            self._loaded, self._read_at = time.monotonic(), read_at
            self.metrics.endpoints.set(len(self.endpoints))
            self.metrics.disabled.set(sum(e.disabled for e in self.endpoints.values()))
        return self.endpoints

    # --- following the store -----------------------------------------------------------

    async def follow(self) -> None:
        """Turn every new message into deliveries, from where the last run stopped."""
        pipeline = [{"$match": {"operationType": "insert"}}]
        while True:
            try:
                token = await self.hooks.resume_token()
                try:
                    stream = await self.store.messages.watch(
                        pipeline, max_await_time_ms=500, resume_after=token
                    )
                except OperationFailure:  # the place is gone from the history: from now on
                    stream = await self.store.messages.watch(pipeline, max_await_time_ms=500)
                    token = None
                async with stream:
                    if token is None:  # a first start: from here on, whatever happens next
                        await self.hooks.save_resume_token(stream.resume_token)
                    self.following = True
                    await self._read(stream)
            except PyMongoError as error:
                stop_if_cancelled(error)
                self.store_ok = self.following = False
                emit("webhook_store_error", where="follow", error=type(error).__name__)
                await asyncio.sleep(1.0)
            except Exception as error:  # a bug of ours: said, and the loop goes on
                self.following = False
                emit("webhook_exception", where="follow", error=f"{type(error).__name__}: {error}")
                await asyncio.sleep(1.0)

    async def _read(self, stream: Any) -> None:
        saved = time.monotonic()
        unsaved = False
        while True:
            batch = await self._batch(stream)
            self.store_ok = True
            if not batch:
                if unsaved:
                    await self.hooks.save_resume_token(stream.resume_token)
                    unsaved, saved = False, time.monotonic()
                await asyncio.sleep(POLL)
                continue
            # A registration answered before a message was stored counts for it: the
            # endpoints are read again unless last read after the batch's newest arrival.
            await self.endpoints_now(since=max(m.received_at.timestamp() for m in batch))
            for message in batch:
                await self.enqueue(message)
            unsaved = True
            if time.monotonic() - saved > SAVE_EVERY:
                await self.hooks.save_resume_token(stream.resume_token)
                unsaved, saved = False, time.monotonic()

    @staticmethod
    async def _batch(stream: Any) -> list[MessageDocument]:
        """The new messages the stream has now, up to `BATCH`."""
        batch: list[MessageDocument] = []
        while len(batch) < BATCH:
            change = await stream.try_next()
            if change is None:
                break
            document = change.get("fullDocument")
            if isinstance(document, dict) and MessageKey.ID in document:
                batch.append(MessageDocument.read(document))
        return batch

    async def enqueue(self, message: MessageDocument) -> int:
        """Durable deliveries of `message` to every enabled endpoint (as last read by
        `endpoints_now`) that matches one of its mailboxes; how many were new. Those with a
        free slot are stored already claimed and sent at once (no round trip through the
        claim); the others wait in the store for the sending loop."""
        wanted: dict[str, list[str]] = {}
        for endpoint in self.endpoints.values():
            boxes = [m for m in message.rcpt if endpoint.matches(m)]
            if boxes and not endpoint.disabled:
                wanted[endpoint.id] = boxes
        if not wanted:
            return 0
        if not message.raw:  # the embedded store's change events carry no bytes: read them
            stored = await self.store.get(message.id)
            if stored is None:  # deleted already: nothing to announce
                return 0
            message = stored
        found, error = await self._links(message)
        now = self.clock()
        expiry = message.expires_at.timestamp() if message.expires_at else now + 86_400
        deliveries: list[dict[str, Any]] = []
        direct: list[dict[str, Any]] = []
        for endpoint_id, boxes in wanted.items():
            free = len(self._tasks) + len(direct) < self.limits.webhook_max_in_flight
            at_once = free and self._busy[endpoint_id] < self.limits.webhook_concurrency
            delivery = {
                "_id": delivery_id(message.id, endpoint_id),
                "endpoint": endpoint_id,
                "message_id": message.id,
                "state": State.PENDING.value,
                "attempts": 0,
                # Claimed at birth (held for a lease) when it is sent at once.
                "due": now + self.limits.lease if at_once else now,
                "created_at": now,
                "received_at": message.received_at.timestamp(),
                "ekey": f"{endpoint_id}:{now:017.6f}:{message.id}",
                "expiry": expiry,
                "payload": payload.build(message, boxes, found, error, self.api_url),
            }
            deliveries.append(delivery)
            if at_once:
                direct.append(delivery)
        added = await self.hooks.enqueue(deliveries)
        for delivery in direct:
            if delivery["_id"] in added:  # not one an earlier run stored (and may hold)
                self._start(delivery, self.endpoints.get(str(delivery["endpoint"])))
        self._wake.set()
        return len(added)

    async def _links(self, message: MessageDocument) -> tuple[dict[str, Any] | None, str | None]:
        """Links and codes from the render workers, or why there are none."""
        try:
            outcome = await self.renderer.run(f"{message.id}/links", {"job": "links"}, message.raw)
        except Busy:
            return None, "too many messages being read; fetch /links later"
        if outcome.failure is not None:
            return None, outcome.failure
        if "unparseable" in outcome.head:
            return None, str(outcome.head["unparseable"])
        found: dict[str, Any] = outcome.head["links"]
        return found, None

    # --- sending -----------------------------------------------------------------------

    async def deliver(self) -> None:
        """Claim due deliveries while there are free slots, and send each."""
        while True:
            try:
                await self._round()
            except PyMongoError as error:
                stop_if_cancelled(error)
                self.store_ok = False
                emit("webhook_store_error", where="deliver", error=type(error).__name__)
                await asyncio.sleep(1.0)
            except Exception as error:  # a bug of ours: said, and the loop goes on
                emit("webhook_exception", where="deliver", error=f"{type(error).__name__}: {error}")
                await asyncio.sleep(1.0)
            self.summary.flush()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE):
                    await self._wake.wait()
            self._wake.clear()

    async def _round(self) -> None:
        free = self.limits.webhook_max_in_flight - len(self._tasks)
        if free <= 0:
            return
        endpoints = await self.endpoints_now()
        cap = self.limits.webhook_concurrency

        taken: Counter[str] = Counter()

        def wanted(delivery: dict[str, Any]) -> bool:
            name = str(delivery["endpoint"])
            if self._busy[name] + taken[name] >= cap:
                return False
            taken[name] += 1
            return True

        now = self.clock()
        claimed = await self.hooks.claim(
            now, self.limits.lease, free * CANDIDATES, wanted, most=free
        )
        for delivery in claimed:
            self._start(delivery, endpoints.get(str(delivery["endpoint"])))

    def _start(self, delivery: dict[str, Any], endpoint: Endpoint | None) -> None:
        """Send a claimed delivery in a task of its own, counted against the bounds."""
        self._busy[str(delivery["endpoint"])] += 1
        task = asyncio.get_running_loop().create_task(self._send(delivery, endpoint))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.metrics.in_flight.set(len(self._tasks))
        self._wake.set()

    async def _send(self, delivery: dict[str, Any], endpoint: Endpoint | None) -> None:
        name = str(delivery["endpoint"])
        self.metrics.in_flight.set(len(self._tasks))
        try:
            if endpoint is None or endpoint.disabled:
                why = "endpoint removed" if endpoint is None else "endpoint disabled"
                await self._finish(delivery, State.FAILED, last_error=why)
                return
            await self._attempt(delivery, endpoint)
        except PyMongoError as error:  # the lease runs out: the delivery is due again
            emit("webhook_store_error", where="settle", error=type(error).__name__)
        except Exception as error:  # a bug of ours: the lease runs out, it is tried again
            emit("webhook_exception", where="send", error=f"{type(error).__name__}: {error}")
        finally:
            self._busy[name] -= 1
            if self._busy[name] <= 0:
                del self._busy[name]

    async def _attempt(self, delivery: dict[str, Any], endpoint: Endpoint) -> None:
        body = delivery["payload"]
        body = body if isinstance(body, bytes) else str(body).encode()
        limits = self.limits
        try:
            target = destination.parse(endpoint.url)
        except destination.Refused as error:
            result = sender.Attempt(sender.Outcome.DESTINATION, error=str(error))
        else:
            headers = signing.headers(
                endpoint.secret, str(delivery["_id"]), int(self.clock()), body
            )
            result = await sender.attempt(
                self.http,
                target,
                headers,
                body,
                within=limits.webhook_timeout,
                dns_timeout=limits.webhook_dns_timeout,
                allow_private=limits.allow_private,
            )
        self.metrics.attempts.labels(result.outcome.value).inc()
        now = self.clock()
        if result.outcome is sender.Outcome.DELIVERED:
            await self._finish(
                delivery, State.DELIVERED, last_status=result.status, delivered_at=now
            )
            await self.hooks.succeeded(endpoint.id, now)
            self.metrics.latency.observe(max(0.0, now - float(delivery["received_at"])))
            return
        await self._failed(delivery, endpoint, result, now)

    async def _failed(
        self, delivery: dict[str, Any], endpoint: Endpoint, result: sender.Attempt, now: float
    ) -> None:
        error = result.error or result.outcome.value
        self.summary.record("webhook_attempt_failed", result.outcome.value)
        failures = await self.hooks.failed(endpoint.id, error, now)
        if failures >= self.limits.disable_after:
            reason = f"{failures} failed attempts in a row; last: {error}"
            if await self.hooks.disable(endpoint.id, reason):
                self._alert(endpoint.id, failures, error)
                self._loaded = -1.0  # seen at once by the next claim
        wait = backoff(int(delivery.get("attempts", 0)) + 1, self.limits.retry_schedule)
        if wait is None:
            await self._finish(delivery, State.FAILED, last_status=result.status, last_error=error)
            return
        changes = {"due": now + wait, "last_status": result.status, "last_error": error}
        await self.hooks.settle(str(delivery["_id"]), changes, done=False)

    async def _finish(self, delivery: dict[str, Any], state: State, **changes: Any) -> None:
        await self.hooks.settle(str(delivery["_id"]), {"state": state.value, **changes}, done=True)
        self.metrics.deliveries.labels(state.value).inc()

    def _alert(self, endpoint_id: str, failures: int, error: str) -> None:
        """One line per summary interval at most; the rest are counted into its summary."""
        now = time.monotonic()
        if now - self._last_alert >= self.summary_interval:
            self._last_alert = now
            emit("webhook_disabled", endpoint=endpoint_id, failures=failures, error=error)
        else:
            self.summary.record("webhook_disabled", endpoint_id)

    # --- housekeeping ------------------------------------------------------------------

    async def keep(self) -> None:
        """Gauges of the store's pending work, and deliveries past retention dropped."""
        swept = -SWEEP_EVERY
        while True:
            try:
                self.metrics.pending.set(await self.hooks.pending())
                await self.endpoints_now()
                if time.monotonic() - swept >= SWEEP_EVERY:
                    await self.hooks.expire(self.clock())
                    swept = time.monotonic()
                self.store_ok = True
            except PyMongoError as error:
                stop_if_cancelled(error)
                self.store_ok = False
                emit("webhook_store_error", where="keep", error=type(error).__name__)
            await asyncio.sleep(1.0)

    async def close(self, grace: float = 0.0) -> None:
        """Stop sending: attempts in flight get `grace` seconds to end and be recorded (each
        has its own deadline); those still running then are cut, and due again once their
        lease runs out. Call it after the loops that start attempts have stopped."""
        if self._tasks and grace > 0:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.aclose()
