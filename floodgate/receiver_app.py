"""Build and run a receiver host from settings: store, blocklist and allowlist, the door and
its workers (FLOODGATE_WORKERS: one in this process, or that many worker processes)."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import uvloop

import processes
from blocklist import LocalAllowlist, LocalBlocklist, LocalConfig
from floodgate.errors import fail, not_yet
from floodgate.settings import Settings, parse_hostport
from mailstore import MessageStore
from receiver.door import dnsbl
from receiver.door.screen import ScreenConfig
from receiver.intake.authcheck import AuthConfig
from receiver.resolver import system_servers
from receiver.runtime.children import WorkersFailed
from receiver.runtime.config import ReceiverConfig, SpoolSettings
from receiver.runtime.host import install_signal_handlers, run_host
from receiver.runtime.intervals import Intervals
from receiver.smtp.tls import TlsSettings, self_signed, server_context
from receiver.telemetry.events import emit


def receiver_config(settings: Settings) -> ReceiverConfig:
    smtp_host, smtp_port = parse_hostport(settings.smtp_listen)
    http_host, http_port = parse_hostport(settings.receiver_http_listen)
    return ReceiverConfig(
        hostname=settings.smtp_hostname,
        domains=settings.domain_set,
        limits=settings.limits(),
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        http_host=http_host,
        http_port=http_port,
        workers=settings.workers,
        proxy_protocol=settings.proxy_protocol,
        trusted_proxies=settings.trusted_proxy_networks,
        proxy_timeout=settings.proxy_protocol_timeout,
        screen=screen_config(settings),
        dns_servers=dns_servers(settings),
        dns_0x20=settings.dns_0x20,
        shutdown_grace=settings.shutdown_grace,
        store_timeout=settings.store_timeout,
        log_summary_interval=settings.log_summary_interval,
        blocklist_max_staleness=settings.blocklist_max_staleness,
        bare_newline=settings.bare_newline,
        data_dir=settings.data_dir,
        tls=tls_settings(settings),
        spool=spool_settings(settings),
        auth=auth_config(settings),
        intervals=intervals(settings),
    )


def intervals(settings: Settings) -> Intervals:
    return Intervals(**{name: getattr(settings, name) for name in Intervals.__dataclass_fields__})


def auth_workers_per_process(receivers: int, cores: int | None = None) -> int:
    """Verification workers per receiver process by default: the host's cores shared
    among its receiver processes, at least one each (they start at the first signature)."""
    return max(1, (cores or os.cpu_count() or 1) // receivers)


def auth_config(settings: Settings) -> AuthConfig | None:
    if not settings.auth_checks:
        return None
    return AuthConfig(
        authserv_id=settings.smtp_hostname,
        timeout=settings.auth_timeout,
        dns_timeout=settings.auth_dns_timeout,
        workers=settings.auth_workers or auth_workers_per_process(settings.workers),
        queue=settings.auth_queue,
        cache_size=settings.auth_cache_size,
        cache_ttl=settings.auth_cache_ttl,
    )


def spool_settings(settings: Settings) -> SpoolSettings | None:
    if not settings.spool:
        return None
    return SpoolSettings(
        directory=settings.data_dir / "spool",
        max_bytes=settings.spool_max_bytes,
        min_free=settings.spool_min_free_bytes,
        replay_rate=settings.spool_replay_rate,
    )


def screen_config(settings: Settings) -> ScreenConfig:
    sites = settings.dnsbl_site_list
    return ScreenConfig(
        sites=sites,
        action=settings.dnsbl_action,
        threshold=settings.dnsbl_threshold,
        replies=dnsbl.parse_replies(settings.dnsbl_reply, sites),
        reverse_dns=settings.reverse_dns,
        dns_timeout=settings.dns_timeout,
        pass_ttl=settings.dnsbl_pass_ttl,
        network_rate=settings.dns_network_rate,
    )


def dns_servers(
    settings: Settings, resolv_conf: Path = Path("/etc/resolv.conf")
) -> tuple[tuple[str, int], ...]:
    """The configured resolvers; else the system's, read only when screening or the
    authentication checks are on."""
    if settings.dns_server_list or not (screen_config(settings).active or settings.auth_checks):
        return settings.dns_server_list
    try:
        servers = system_servers(resolv_conf.read_text())
    except OSError:
        servers = ()
    if not servers:
        fail(
            f"floodgate receiver: DNS is needed but {resolv_conf} names no nameserver; "
            "set FLOODGATE_DNS_SERVERS"
        )
    return servers


def tls_settings(settings: Settings) -> TlsSettings | None:
    """The certificate STARTTLS uses: configured, or self-signed under the data dir."""
    if not settings.starttls:
        return None
    if settings.tls_cert is not None:
        return TlsSettings(settings.tls_cert, settings.tls_key)
    name, directory = settings.smtp_hostname, settings.data_dir
    ecdsa = self_signed(directory, name, ecdsa=True)  # chosen by clients that can
    return TlsSettings(self_signed(directory, name), None, True, (ecdsa,))


def blocklist_config(settings: Settings, snapshot: Path | None = None) -> LocalConfig:
    smtp_host, smtp_port = parse_hostport(settings.smtp_listen)
    return LocalConfig(
        snapshot_path=snapshot or settings.blocklist_snapshot_path,
        resync_interval=settings.blocklist_resync_interval,
        change_stream=settings.blocklist_change_stream,
        memo_size=max(1, settings.blocklist_memo_size),
        actor=f"receiver {settings.smtp_hostname} {smtp_host}:{smtp_port}",
        timeout=settings.store_timeout,
    )


def raise_fd_limit(wanted: int) -> int:
    """Lift the soft open-files limit toward `wanted` (capped by the hard limit).

    Every connection is a file descriptor; the common default of 1024 would make the
    kernel refuse connections long before FLOODGATE_MAX_CONNECTIONS is reached.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


async def serve(settings: Settings, uri: str, config: ReceiverConfig) -> None:
    """Run the receiver until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    install_signal_handlers(stop)
    # Indexes are made by the health loop once the store answers: the port opens at once
    # even when the store is down (every message gets 451 until it is back).
    store = await MessageStore.open(settings.store_config(uri), ensure_indexes=False, report=emit)
    blocklist = LocalBlocklist(store.db, blocklist_config(settings))
    allowlist = LocalAllowlist(
        store.db,
        blocklist_config(settings, settings.data_dir / "allowlist.snapshot"),
        static=settings.allowlist_networks,
    )
    # The snapshots load before the port opens: a receiver restarted while the store is
    # down still refuses every client it knew to be banned, and spares every one allowed.
    await blocklist.start()
    await allowlist.start()
    try:
        await run_host(config, store, blocklist, allowlist, stop, spawn_worker)
    finally:
        await allowlist.stop()
        await blocklist.stop()
        await store.close()


def spawn_worker(index: int, end: socket.socket) -> subprocess.Popen[bytes]:
    """Worker process `index` of this host (floodgate.worker_app), with its end of the
    channel; it reads the same settings from the same environment."""
    return processes.spawn(
        [sys.executable, "-m", "floodgate.worker_app", str(index), str(end.fileno())],
        pass_fds=(end.fileno(),),
        env=os.environ,
    )


def main(settings: Settings) -> None:
    if not settings.mongodb_uri:
        fail("floodgate receiver needs FLOODGATE_MONGODB_URI (or use `floodgate run`)")
    # Room for every allowed connection plus the store pool, health probes and logs.
    raise_fd_limit(settings.max_connections + 1024)
    config = receiver_config(settings)
    if config.tls is not None:
        try:
            server_context(config.tls.cert, config.tls.key, config.tls.extra)
        except (OSError, ssl.SSLError) as error:
            fail(f"floodgate receiver: cannot use the TLS certificate {config.tls.cert}: {error}")
    try:
        uvloop.run(serve(settings, settings.mongodb_uri, config))
    except OSError as error:  # typically: the address is already in use
        if error.errno == errno.EADDRNOTAVAIL:  # not (yet) this host's: the network at boot
            not_yet(f"floodgate receiver: cannot listen: {error}; retrying is up to systemd")
        fail(f"floodgate receiver: cannot listen: {error}")
    except WorkersFailed as error:
        fail(f"floodgate receiver: {error}; see the worker's log lines above")
