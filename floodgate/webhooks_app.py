"""Build and run the webhook dispatcher from settings (`floodgate webhooks`): the store, the
render workers that read links and codes, the dispatcher's loops, and its /healthz,
/readyz and /metrics on FLOODGATE_WEBHOOKS_HTTP_LISTEN. One per deployment is enough;
more share the work through the store (each delivery is claimed by one)."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import uvloop
from pymongo.errors import PyMongoError

from api.renderpool import RenderPool
from floodgate.errors import fail, must_listen
from floodgate.settings import Settings, parse_hostport
from mailstore import MessageStore
from mailstore.webhooks import WebhookStore
from receiver.runtime.health import HealthServer
from receiver.telemetry.events import emit
from webhooks.dispatcher import Dispatcher


async def serve(settings: Settings, uri: str) -> None:
    store = await MessageStore.open(settings.store_config(uri), ensure_indexes=False)
    hooks = WebhookStore(store.db, settings.store_timeout)
    limits = settings.webhook_limits()
    renderer = RenderPool(settings.api_limits())
    dispatcher = Dispatcher(
        store,
        hooks,
        limits,
        renderer,
        settings.webhook_api_base(),
        summary_interval=settings.log_summary_interval,
    )

    def ready() -> tuple[bool, str]:
        if not dispatcher.store_ok:
            return False, "message store not answering"
        if not dispatcher.following:
            return False, "not following new messages yet"
        return True, "ready"

    health = HealthServer(dispatcher.metrics.registry, ready)
    await health.start(*parse_hostport(settings.webhooks_http_listen))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    emit("webhooks_started", listen=settings.webhooks_http_listen)
    tasks = [
        loop.create_task(dispatcher.follow(), name="follow"),
        loop.create_task(dispatcher.deliver(), name="deliver"),
        loop.create_task(dispatcher.keep(), name="keep"),
        loop.create_task(_ensure_indexes(hooks), name="indexes"),
    ]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # An attempt in flight is finished and recorded, not cut: a cut one is sent again
        # once its lease runs out, a second POST of a message its endpoint already has.
        await dispatcher.close(grace=limits.lease)
        await renderer.close()
        await health.close()
        await store.close()
        emit("webhooks_stopped")


async def _ensure_indexes(hooks: WebhookStore) -> None:
    """The deliveries' indexes, once the store answers."""
    while True:
        with contextlib.suppress(PyMongoError):
            await hooks.ensure_indexes()
            return
        await asyncio.sleep(1.0)


def main(settings: Settings) -> None:
    if not settings.mongodb_uri:
        fail("floodgate webhooks needs FLOODGATE_MONGODB_URI (or use `floodgate run`)")
    must_listen("webhooks", *parse_hostport(settings.webhooks_http_listen))
    uvloop.run(serve(settings, settings.mongodb_uri))
