"""The API application: routes, auth, uniform JSON errors, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import docs, messages, page, push, stats, wait, webhooks
from api.auth import require_admin, require_token
from api.blocklist import allowlist_router
from api.blocklist import router as blocklist_router
from api.gate import Gate
from api.head import HeadAsGet
from api.limits import DEFAULTS, ApiLimits
from api.models import ERRORS, Status, binary
from api.renderpool import RenderPool
from api.shares import TURNS, ReadRate, SendTimeout, Slots, read_turns
from blocklist import BlocklistRepository
from blocklist.repository import ALLOWLIST, ALLOWLIST_AUDIT, PartialBulk
from mailstore import MessageStore, StoreConfig
from mailstore.webhooks import WebhookStore
from webhooks.limits import DEFAULTS as WEBHOOK_DEFAULTS
from webhooks.limits import WebhookLimits

log = logging.getLogger("floodgate.api")
# /readyz answers within this, store down or not: a probe with a 1 s timeout must see the
# reason (503 and why), not a timeout of its own.
READY_TIMEOUT = 0.5


@dataclass(frozen=True)
class ApiConfig:
    store: StoreConfig
    admin_token: str
    read_token: str | None = None
    public_inbox: bool = False  # the page carries the read token (see api.page)
    domains: tuple[str, ...] = ()  # the domains we receive for, as the page tells its users
    mta_sts: str | None = None  # the MTA-STS policy file served at /.well-known/
    limits: ApiLimits = DEFAULTS  # render workers and live-push shares (api.limits)
    webhooks: WebhookLimits = WEBHOOK_DEFAULTS  # what a registration may ask (webhooks.limits)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "floodgate_api_requests",
            "API requests by route template and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "floodgate_api_request_seconds", "API request time", ["route"], registry=self.registry
        )


def create_app(config: ApiConfig, store: MessageStore | None = None) -> FastAPI:
    """The FastAPI app; opens the store on start-up unless one is given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        app.state.store = store or await MessageStore.open(config.store, ensure_indexes=False)
        app.state.indexes_ensured = False
        _attach_blocklist(app, config.store.timeout)
        app.state.webhooks = WebhookStore(app.state.store.db, config.store.timeout)
        await ensure_indexes(app)
        app.state.hub = push.Hub(config.limits)
        app.state.renderer = RenderPool(config.limits, registry=app.state.metrics.registry)
        follower = await push.start(app.state.hub, app.state.store.messages)
        app.state.stats = stats.StatsCache()
        keeper = asyncio.get_running_loop().create_task(
            app.state.stats.refresh(app.state.store, app.state.blocklist), name="stats-keeper"
        )
        yield
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        indexing = getattr(app.state, "indexing", None)  # started by a /readyz, not done
        if indexing is not None:
            indexing.cancel()
        await push.stop(follower)
        await app.state.renderer.close()
        if own:
            await app.state.store.close()

    app = FastAPI(
        title="Floodgate API",
        version="1",
        description=docs.DESCRIPTION,
        openapi_tags=docs.TAGS,
        lifespan=lifespan,
        responses=ERRORS,
        docs_url=None,  # served by api.docs from our own assets
        redoc_url=None,
    )
    app.state.admin_token = config.admin_token
    app.state.read_token = config.read_token
    app.state.webhook_limits = config.webhooks
    app.state.metrics = ApiMetrics()
    limits = config.limits
    app.state.read_rate = ReadRate(limits.read_rate, limits.read_burst, limits.read_hold)
    app.state.downloads = Slots(limits.downloads_per_client)
    app.state.read_turns = turns = read_turns(limits.reads_at_once)
    reads = Gauge(
        "floodgate_api_reads",
        "Mailbox and message reads being worked on, and waiting for their client's turn",
        ["state"],
        registry=app.state.metrics.registry,
    )
    reads.labels("working").set_function(lambda: TURNS - turns.idle)
    reads.labels("waiting").set_function(lambda: turns.waiting)
    # Outermost: token and body size are checked before anything reads a body.
    app.add_middleware(Gate, token=config.admin_token, read_token=config.read_token)
    app.add_middleware(HeadAsGet)  # outermost: HEAD is a GET to every layer below
    # Around everything: every answer's writes, errors included, wait for a reader at most
    # `send_timeout` each.
    app.add_middleware(SendTimeout, seconds=limits.send_timeout)
    _install_errors(app)
    _install_metrics(app)
    _health_routes(app)
    page.install(
        app,
        config.read_token if config.public_inbox else None,
        domains=config.domains,
        read_token_configured=config.read_token is not None,
    )
    _mta_sts_route(app, config.mta_sts)
    docs.install(app)
    app.include_router(messages.router, dependencies=[Depends(require_token)])
    app.include_router(wait.router, dependencies=[Depends(require_token)])
    _not_allowed_routes(app)
    _include_blocklist(app)
    return app


def _attach_blocklist(app: FastAPI, timeout: float) -> None:
    """The access lists' repositories, each write bounded by the store timeout."""
    app.state.blocklist = BlocklistRepository(app.state.store.db, timeout=timeout)
    app.state.allowlist = BlocklistRepository(
        app.state.store.db, timeout=timeout, collection=ALLOWLIST, audit=ALLOWLIST_AUDIT
    )


async def ensure_indexes(app: FastAPI) -> bool:
    """Messages' and blocklist's indexes (TTL retention included), once the store answers.

    Tried at start-up and again on every successful `/readyz` until it works, so an API
    started while the store was down still creates them.
    """
    if app.state.indexes_ensured:
        return True
    try:
        await app.state.store.ensure_indexes()
        for name in ("blocklist", "allowlist"):
            access = getattr(app.state, name, None)
            if access is not None:
                await access.ensure_indexes()
        hooks = getattr(app.state, "webhooks", None)
        if hooks is not None:
            await hooks.ensure_indexes()
    except PyMongoError as error:
        log.warning("indexes not ensured yet: %s", type(error).__name__)
        return False
    app.state.indexes_ensured = True
    return True


def _ensure_indexes_soon(app: FastAPI) -> None:
    """Indexes not made yet: try in the background, so /readyz never waits on them."""
    if app.state.indexes_ensured:
        return
    task = getattr(app.state, "indexing", None)
    if task is None or task.done():
        app.state.indexing = asyncio.get_running_loop().create_task(ensure_indexes(app))


def _include_blocklist(app: FastAPI) -> None:
    app.include_router(blocklist_router, dependencies=[Depends(require_admin)])
    app.include_router(allowlist_router, dependencies=[Depends(require_admin)])
    app.include_router(stats.router, dependencies=[Depends(require_admin)])
    app.include_router(webhooks.router, dependencies=[Depends(require_admin)])


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(app: FastAPI, path: str) -> str:
    """Every method routing would really serve at `path` (Starlette's 405 names only the
    first partly matching route's methods)."""
    allowed = []
    for method in METHODS:
        scope = {"type": "http", "path": path, "method": method, "root_path": ""}
        for route in app.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                if getattr(route, "name", "") != NOT_ALLOWED:
                    allowed.append(method)
                break
    return ", ".join(allowed)


NOT_ALLOWED = "not_allowed"


def _not_allowed_routes(app: FastAPI) -> None:
    """`{cidr:path}` would take the check, history and bulk paths as CIDRs for the methods
    those paths lack: say 405 there (before any token role check, as for any method)."""

    async def not_allowed() -> None:
        raise StarletteHTTPException(status_code=405, detail="Method Not Allowed")

    for name in ("blocklist", "allowlist"):
        shadowed = {
            f"/v1/{name}/check/{{ip}}": ["DELETE"],
            f"/v1/{name}/{{cidr:path}}/history": ["DELETE"],
            f"/v1/{name}/bulk": ["GET", "DELETE"],
        }
        for path, methods in shadowed.items():
            app.add_api_route(
                path, not_allowed, methods=methods, name=NOT_ALLOWED, include_in_schema=False
            )


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, **extra})


def _install_errors(app: FastAPI) -> None:
    # Starlette's own errors (404 for an unknown path, 405 with its Allow header) too.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = _error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            response.headers["Allow"] = _allowed_methods(request.app, request.url.path)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "message": e.get("msg")}
            for e in exc.errors()
        ]
        first = details[0] if details else {"field": "", "message": "invalid request"}
        return _error(422, f"{first['field']}: {first['message']}", details=details)

    @app.exception_handler(PartialBulk)
    async def partial(request: Request, exc: PartialBulk) -> JSONResponse:
        return _error(503, f"the store failed mid-way: {exc}")

    # A bug of ours still answers JSON (Starlette's default is a plain-text 500).
    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("event=api_internal_error error=%s", type(exc).__name__, exc_info=exc)
        return _error(500, "internal error")

    @app.exception_handler(PyMongoError)
    async def store_down(request: Request, exc: PyMongoError) -> JSONResponse:
        log.warning("event=api_store_error error=%s", type(exc).__name__)
        return _error(503, "message store unavailable, try again later")


def _install_metrics(app: FastAPI) -> None:
    app.add_middleware(Measured, metrics=app.state.metrics)


class Measured:
    """Every answer counted and timed (to its first byte) by route template and status.
    Plain ASGI: the `@app.middleware("http")` form ran each request through a task group
    and two memory streams (under a profiler the API answered 3,332 refused requests in
    6 s with it, 5,994 without)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        counted = False

        def count(status: int) -> None:
            nonlocal counted
            counted = True
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")  # bounded: route templates only
            self.metrics.requests.labels(template, str(status)).inc()
            self.metrics.seconds.labels(template).observe(time.perf_counter() - started)

        async def measured(message: Message) -> None:
            if message["type"] == "http.response.start" and not counted:
                count(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, measured)
        finally:
            if not counted:  # an error the handlers did not answer: the server's 500
                count(500)


def _mta_sts_route(app: FastAPI, policy: str | None) -> None:
    """RFC 8461 3.2: the policy, as text/plain, at a fixed path of the policy host
    (`mta-sts.<domain>`, over HTTPS: see deploy/README). 404 when none is configured."""

    @app.get(
        "/.well-known/mta-sts.txt",
        response_class=PlainTextResponse,
        responses=binary("the MTA-STS policy (text/plain)"),
        tags=[docs.Tag.HEALTH],
        summary="The MTA-STS policy",
    )
    async def mta_sts() -> PlainTextResponse:
        """The policy that tells sending MTAs to insist on STARTTLS to our MX (RFC 8461),
        as `text/plain`; serve it on `https://mta-sts.<domain>/`. 404 when
        `FLOODGATE_MTA_STS_MODE` is unset."""
        if policy is None:
            raise StarletteHTTPException(status_code=404, detail="no MTA-STS policy configured")
        return PlainTextResponse(policy, headers={"Cache-Control": "max-age=300"})


def _health_routes(app: FastAPI) -> None:
    @app.get("/healthz", response_model=Status, tags=[docs.Tag.HEALTH], summary="Liveness probe")
    async def healthz() -> dict[str, str]:
        """`{"status": "ok"}` while the process lives: for a liveness probe (it does not
        ask the store)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Status, tags=[docs.Tag.HEALTH], summary="Readiness probe")
    async def readyz(request: Request) -> JSONResponse:
        """`{"status": "ready"}` when the message store answers, else 503 naming the cause
        (refused, timeout...), within 0.5 s either way so a probe with a 1 s timeout sees
        the reason."""
        store: MessageStore = request.app.state.store
        reason = await store.check(within=READY_TIMEOUT)
        if reason is not None:
            return _error(503, f"message store not answering: {reason}")
        _ensure_indexes_soon(request.app)
        return JSONResponse({"status": "ready"})

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"description": "Prometheus text exposition", "content": {}}},
        tags=[docs.Tag.HEALTH],
        summary="Prometheus metrics",
    )
    async def metrics(request: Request) -> Response:
        """Requests by route template and status, and their durations, in the Prometheus
        text format (labels are route templates only: never an address)."""
        registry: CollectorRegistry = request.app.state.metrics.registry
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
