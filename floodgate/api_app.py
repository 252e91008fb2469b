"""Build and run the API process from settings."""

from __future__ import annotations

import uvicorn

from api.app import ApiConfig, create_app
from api.push import MAX_SUBSCRIBERS
from floodgate.errors import fail, must_listen
from floodgate.settings import Settings, parse_hostport


def main(settings: Settings, token: str) -> None:
    if not settings.mongodb_uri:
        fail("floodgate api needs FLOODGATE_MONGODB_URI (or use `floodgate run`)")
    read_token = settings.read_token.get_secret_value() if settings.read_token else None
    app = create_app(
        ApiConfig(
            settings.store_config(settings.mongodb_uri),
            token,
            read_token,
            public_inbox=settings.public_inbox,
            domains=tuple(settings.domains.split(",")),
            mta_sts=settings.mta_sts_policy,
            limits=settings.api_limits(),
            webhooks=settings.webhook_limits(),
        )
    )
    host, port = parse_hostport(settings.api_listen)
    must_listen("api", host, port)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # The live-push hub caps its streams at MAX_SUBSCRIBERS; the rest is for requests.
        limit_concurrency=MAX_SUBSCRIBERS + 200,
        h11_max_incomplete_event_size=16384,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:  # uvicorn logs why (e.g. the address is in use) and returns
        raise SystemExit(2)
