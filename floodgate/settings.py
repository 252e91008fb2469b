"""Settings: read once at start-up from `FLOODGATE_` variables (and an optional TOML file),
validated, then passed down as frozen values. Nothing else reads `os.environ`."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from api.limits import DEFAULTS as API_DEFAULTS
from api.limits import RANGES as API_RANGES
from api.limits import ApiLimits
from blocklist.entries import normalize
from receiver.door import dnsbl
from receiver.limits import DEFAULTS as LIMIT_DEFAULTS
from receiver.limits import RANGES, Limits
from receiver.runtime.intervals import DEFAULTS as INTERVAL_DEFAULTS
from receiver.runtime.intervals import RANGES as INTERVAL_RANGES
from receiver.smtp.body import BareNewline
from webhooks.limits import DEFAULT_SCHEDULE, WebhookLimits, parse_schedule
from webhooks.limits import RANGES as WEBHOOK_RANGES

if TYPE_CHECKING:
    from mailstore import StoreConfig

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Variables of ours that are not settings: the tests' store and the Makefile's installs.
NOT_SETTINGS = frozenset({"FLOODGATE_TEST_MONGODB_URI", "FLOODGATE_INSTALL_TOOLS"})
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def limit(name: str) -> Any:
    """A limit's settings field: its default and range from receiver/limits.py."""
    low, high = RANGES[name]
    return Field(getattr(LIMIT_DEFAULTS, name), ge=low, le=high)


def interval(name: str) -> Any:
    """An interval's settings field: its default and range from receiver/runtime/intervals.py."""
    low, high = INTERVAL_RANGES[name]
    return Field(getattr(INTERVAL_DEFAULTS, name), ge=low, le=high)


def api_limit(name: str) -> Any:
    """An API limit's settings field: its default and range from api/limits.py."""
    low, high = API_RANGES[name]
    return Field(getattr(API_DEFAULTS, name), ge=low, le=high)


def webhook_limit(name: str) -> Any:
    """A webhook bound's settings field: its default and range from webhooks/limits.py."""
    low, high = WEBHOOK_RANGES[name]
    return Field(getattr(WebhookLimits(), name), ge=low, le=high)


def host_name(text: str) -> bool:
    """An RFC 1123 host name (labels of letters, digits and inner hyphens), or an
    address literal in brackets."""
    if text.startswith("[") and text.endswith("]"):
        try:
            ipaddress.ip_address(text[1:-1].removeprefix("IPv6:"))
        except ValueError:
            return False
        return True
    labels = text.rstrip(".").split(".")
    return len(text) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


class SettingsError(ValueError):
    """Every problem found in the settings, one line each, named by its variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def cannot_bind(host: str, port: int) -> OSError | None:
    """Why a TCP listener could not bind `host:port` now (None: it could); the probe
    socket is closed at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error
    return None


def parse_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` to a (host, port) pair."""
    value = value.strip()
    if value.startswith("["):
        host, _, port = value[1:].partition("]:")
    else:
        host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return host or default_host, int(port)


def listen_address(value: str) -> tuple[str, int]:
    """A listen setting: `address:port` or `[v6]:port` with an IP address (`0.0.0.0` or
    `[::]` for every address of the host). A name is refused: it would be looked up, and a
    placeholder left in an env file (`THIS_HOST_ADDRESS:2525`) is named at start-up instead
    of failing at bind."""
    host, port = parse_hostport(value)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{host!r} is not an IP address; listen on one of this host's addresses "
            f"(e.g. 10.0.1.11:{port}, [2001:db8::11]:{port}; 0.0.0.0:{port} for all)"
        ) from None
    return host, port


def dns_server(value: str) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; port 53 by default."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":") if rest else "53"
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, "53"  # IPv4, or IPv6 without brackets
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"{value!r} is not host[:port]")
    return host, int(port)


class Settings(BaseSettings):
    """All of Floodgate's settings. Each field is the variable `FLOODGATE_<NAME>`."""

    model_config = SettingsConfigDict(
        env_prefix="FLOODGATE_", frozen=True, extra="ignore", env_ignore_empty=True
    )

    config_file: Path | None = None  # optional TOML file with the same keys

    # Store.
    mongodb_uri: str | None = None
    mongodb_database: str = "floodgate"
    store_timeout: float = Field(5.0, gt=0, le=120)
    max_pending_inserts: int = Field(2_000, ge=1, le=1_000_000)
    insert_batch_size: int = Field(256, ge=1, le=10_000)
    retention: int = Field(86_400, ge=60, le=366 * 86_400)
    # The local spool (receiver.delivery.spool): mail taken while the store is away.
    spool: bool = True
    spool_max_bytes: int = Field(1 << 30, ge=1 << 20, le=1 << 50)
    spool_min_free_bytes: int = Field(256 << 20, ge=0, le=1 << 50)
    spool_replay_rate: float = Field(500.0, ge=1, le=1_000_000)
    data_dir: Path = Path("var")

    # Listeners and identity.
    domains: str = "mx.test"
    hostname: str | None = None
    smtp_listen: str = "127.0.0.1:2525"
    api_listen: str = "127.0.0.1:8025"
    receiver_http_listen: str = "127.0.0.1:8026"
    webhooks_http_listen: str = "127.0.0.1:8027"  # the dispatcher's /healthz and /metrics
    # Receiver processes on one host (receiver.runtime.children): 1 is one process doing it all.
    workers: int = Field(1, ge=1, le=64)
    admin_token: SecretStr | None = None
    read_token: SecretStr | None = None  # mailbox reads and deletes only (a reader front end)
    # The web inbox carries the read token, so anyone who opens it can read mailboxes
    # (a public disposable-mail site). Needs FLOODGATE_READ_TOKEN.
    public_inbox: bool = False
    proxy_protocol: bool = False
    trusted_proxies: str = ""
    allowlist: str = ""  # static allowlist entries (CIDRs), merged with the stored ones
    proxy_protocol_timeout: float = Field(5.0, ge=3, le=60)
    reverse_dns: bool = False
    dns_timeout: float = Field(2.0, gt=0, le=10)
    # DNS 0x20: the case of each letter of a question at random, checked in the answer.
    dns_0x20: bool = False
    shutdown_grace: float = Field(30.0, ge=0, le=600)
    # Bare CR/LF or NUL in message content: reject (521, close) | normalize | accept.
    bare_newline: BareNewline = BareNewline.REJECT
    log_level: str = "INFO"
    log_format: Literal["logfmt", "json"] = "logfmt"
    log_summary_interval: float = Field(10.0, ge=1, le=3600)

    # Blocklist sync.
    blocklist_resync_interval: float = Field(30.0, ge=1, le=3600)
    blocklist_max_staleness: float = Field(120.0, ge=1, le=86_400)
    blocklist_change_stream: bool = True
    blocklist_snapshot: Path | None = None  # default: <data_dir>/blocklist.snapshot
    blocklist_memo_size: int = Field(65_536, ge=0, le=10_000_000)

    # Receiver limits: default and range declared once, in receiver/limits.py.
    max_connections: int = limit("max_connections")
    max_connections_per_ip: int = limit("max_connections_per_ip")
    allowlist_max_connections_per_ip: int = limit("allowlist_max_connections_per_ip")
    ipv6_prefix: int = limit("ipv6_prefix")
    connection_rate: int = limit("connection_rate")
    message_rate: int = limit("message_rate")
    recipient_rate: int = limit("recipient_rate")
    mailbox_rate: int = limit("mailbox_rate")
    mailbox_max_messages: int = limit("mailbox_max_messages")
    rate_clients: int = limit("rate_clients")
    idle_timeout: float = limit("idle_timeout")
    session_timeout: float = limit("session_timeout")
    data_timeout: float = limit("data_timeout")
    min_data_rate: int = limit("min_data_rate")
    greet_wait: float = limit("greet_wait")
    max_message_size: int = limit("max_message_size")
    max_recipients: int = limit("max_recipients")
    max_data_memory: int = limit("max_data_memory")
    max_commands: int = limit("max_commands")
    junk_command_limit: int = limit("junk_command_limit")
    hard_error_limit: int = limit("hard_error_limit")
    stress_threshold: float = limit("stress_threshold")
    stress_idle_timeout: float = limit("stress_idle_timeout")
    stress_hard_error_limit: int = limit("stress_hard_error_limit")
    autoban_threshold: int = limit("autoban_threshold")
    autoban_refusal_threshold: int = limit("autoban_refusal_threshold")
    autoban_window: float = limit("autoban_window")
    autoban_ttl: float = limit("autoban_ttl")
    tls_max_handshakes: int = limit("tls_max_handshakes")
    tls_max_handshakes_per_ip: int = limit("tls_max_handshakes_per_ip")
    tls_max_handshakes_per_network: int = limit("tls_max_handshakes_per_network")
    tls_handshake_rate: int = limit("tls_handshake_rate")
    tls_handshake_timeout: float = limit("tls_handshake_timeout")
    tls_hello_timeout: float = limit("tls_hello_timeout")
    dnsbl_threshold: int = limit("dnsbl_threshold")
    screen_timeout: float = limit("screen_timeout")
    stress_screen_timeout: float = limit("stress_screen_timeout")
    dnsbl_pass_ttl: float = limit("dnsbl_pass_ttl")
    dns_max_in_flight: int = limit("dns_max_in_flight")
    dns_rate: int = limit("dns_rate")
    dns_network_rate: int = limit("dns_network_rate")
    proxy_max_pending: int = limit("proxy_max_pending")
    karma_messages: int = limit("karma_messages")
    karma_window: float = limit("karma_window")

    # Intervals of the receiver's processes: default and range declared once, in
    # receiver/runtime/intervals.py (tests shorten them; production keeps the defaults).
    store_probe_interval: float = interval("store_probe_interval")
    stats_interval: float = interval("stats_interval")
    sweep_interval: float = interval("sweep_interval")
    tls_reload_interval: float = interval("tls_reload_interval")
    worker_status_interval: float = interval("worker_status_interval")
    worker_restart_delay: float = interval("worker_restart_delay")
    replay_idle: float = interval("replay_idle")
    replay_backoff: float = interval("replay_backoff")

    # Screening before the banner: DNS lists in postscreen's syntax (receiver.door.dnsbl), off
    # while empty. No DNS query is made unless lists or reverse DNS are configured.
    dnsbl_sites: str = ""
    dnsbl_action: Literal["ignore", "enforce", "drop"] = "ignore"
    dnsbl_reply: str = ""  # list=shown name, ...: what a refusal calls a list
    dns_servers: str = ""  # host:port, ...; empty: the system's (/etc/resolv.conf)

    # Authentication verdicts (receiver.intake.authcheck): SPF, DKIM, DMARC, ARC per message. Off
    # by default: on, every message costs DNS lookups, and no DNS is made unless asked.
    auth_checks: bool = False
    auth_timeout: float = Field(2.0, gt=0, le=30)  # after the final dot, per message
    auth_dns_timeout: float = Field(1.0, gt=0, le=10)  # one lookup
    # 0: one per core the host's receiver processes share (at least 1 per process).
    auth_workers: int = Field(0, ge=0, le=64)
    auth_queue: int = Field(64, ge=1, le=100_000)
    auth_cache_size: int = Field(10_000, ge=1, le=10_000_000)
    auth_cache_ttl: float = Field(300.0, ge=1, le=86_400)

    # API limits (rendering, reads, live push): default and range declared once, in
    # api/limits.py.
    render_workers: int = api_limit("render_workers")
    render_queue: int = api_limit("render_queue")
    render_queue_per_client: int = api_limit("render_queue_per_client")
    render_seconds: float = api_limit("render_seconds")
    render_memory: int = api_limit("render_memory")
    render_cache: int = api_limit("render_cache")
    push_per_client: int = api_limit("push_per_client")
    push_per_mailbox: int = api_limit("push_per_mailbox")
    push_per_client_mailbox: int = api_limit("push_per_client_mailbox")
    push_per_network: int = api_limit("push_per_network")
    read_rate: float = api_limit("read_rate")
    read_burst: int = api_limit("read_burst")
    read_hold: float = api_limit("read_hold")
    reads_at_once: int = api_limit("reads_at_once")
    downloads_per_client: int = api_limit("downloads_per_client")
    send_timeout: float = api_limit("send_timeout")

    # Webhooks (webhooks/): bounds declared once, in webhooks/limits.py.
    webhook_timeout: float = webhook_limit("webhook_timeout")
    webhook_dns_timeout: float = webhook_limit("webhook_dns_timeout")
    webhook_concurrency: int = webhook_limit("webhook_concurrency")
    webhook_max_in_flight: int = webhook_limit("webhook_max_in_flight")
    webhook_max_endpoints: int = webhook_limit("webhook_max_endpoints")
    webhook_retry_schedule: str = DEFAULT_SCHEDULE
    webhook_allow_private: bool = False
    # Where a webhook's readers fetch the message (its raw URL); default: the API listener.
    webhook_api_url: str | None = None

    # STARTTLS: offered unless turned off; with no certificate configured, a self-signed
    # one for the hostname is made under the data dir on first start.
    starttls: bool = True
    tls_cert: Path | None = None  # PEM certificate chain
    tls_key: Path | None = None  # PEM private key (default: in the certificate file)
    # MTA-STS (RFC 8461): the API serves /.well-known/mta-sts.txt when a mode is set.
    mta_sts_mode: Literal["testing", "enforce", "none"] | None = None
    mta_sts_mx: str = ""  # MX names the policy allows (default: FLOODGATE_HOSTNAME)
    mta_sts_max_age: int = Field(604_800, ge=86_400, le=31_557_600)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then the environment, then the TOML file.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _toml_path(init_settings, env_settings)
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @field_validator("domains")
    @classmethod
    def _domains_valid(cls, value: str) -> str:
        domains = [d.strip().lower().rstrip(".") for d in value.split(",") if d.strip()]
        if not domains:
            raise ValueError("at least one domain is required")
        for domain in domains:
            if not host_name(domain) or domain.startswith("["):
                raise ValueError(f"{domain!r} is not a domain name")
        return ",".join(domains)

    @field_validator("hostname")
    @classmethod
    def _hostname_valid(cls, value: str | None) -> str | None:
        if value is not None and not host_name(value):
            raise ValueError("must be a host name (letters, digits, hyphens, dots)")
        return value

    @field_validator("mta_sts_mx")
    @classmethod
    def _mx_valid(cls, value: str) -> str:
        for name in _split(value):
            # RFC 8461 3.2: a name, or a wildcard for one label ("*.example.com").
            if not host_name(name.removeprefix("*.")) or name.startswith("["):
                raise ValueError(f"{name!r} is not an MX host name")
        return value

    @property
    def mta_sts_policy(self) -> str | None:
        """The MTA-STS policy file, or None when no mode is set."""
        if self.mta_sts_mode is None:
            return None
        lines = ["version: STSv1", f"mode: {self.mta_sts_mode}"]
        lines += [f"mx: {name}" for name in (_split(self.mta_sts_mx) or [self.smtp_hostname])]
        lines.append(f"max_age: {self.mta_sts_max_age}")
        return "\r\n".join(lines) + "\r\n"

    @field_validator("log_level")
    @classmethod
    def _level_valid(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule_valid(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @field_validator("webhook_api_url")
    @classmethod
    def _api_url_valid(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", value):
            raise ValueError("must be an http:// or https:// base URL, e.g. https://mx.example")
        return value.rstrip("/") if value else value

    @field_validator("smtp_listen", "api_listen", "receiver_http_listen", "webhooks_http_listen")
    @classmethod
    def _listen_valid(cls, value: str) -> str:
        listen_address(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_valid(cls, value: str) -> str:
        for item in _split(value):
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("dnsbl_sites")
    @classmethod
    def _sites_valid(cls, value: str) -> str:
        dnsbl.parse_sites(value)  # raises ValueError naming the entry
        return value

    @field_validator("dnsbl_reply")
    @classmethod
    def _reply_valid(cls, value: str) -> str:
        dnsbl.parse_replies(value)
        return value

    @field_validator("dns_servers")
    @classmethod
    def _servers_valid(cls, value: str) -> str:
        for item in _split(value):
            ipaddress.ip_address(dns_server(item)[0])  # an address: no lookup to find it
        return value

    @property
    def dnsbl_site_list(self) -> tuple[dnsbl.Site, ...]:
        return dnsbl.parse_sites(self.dnsbl_sites)

    @property
    def dns_server_list(self) -> tuple[tuple[str, int], ...]:
        """The configured resolvers; empty means the system's."""
        return tuple(dns_server(item) for item in _split(self.dns_servers))

    @field_validator("allowlist")
    @classmethod
    def _allowlist_valid(cls, value: str) -> str:
        for item in _split(value):
            normalize(item)  # raises InvalidEntry (a ValueError) naming what is wrong
        return value

    @property
    def allowlist_networks(self) -> tuple[str, ...]:
        """The static allowlist, each entry normalized (`203.0.113.7/32`, `2001:db8::/48`)."""
        return tuple(normalize(item) for item in _split(self.allowlist))

    @property
    def domain_set(self) -> frozenset[str]:
        """The domains we accept mail for, lowercased."""
        return frozenset(self.domains.split(","))

    @property
    def smtp_hostname(self) -> str:
        """Our name in the banner and Received lines; never looked up via DNS."""
        return self.hostname or self.domains.split(",")[0]

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """Addresses allowed to send a PROXY protocol header."""
        return tuple(ipaddress.ip_network(i, strict=False) for i in _split(self.trusted_proxies))

    @property
    def blocklist_snapshot_path(self) -> Path:
        """Where the receiver keeps its on-disk copy of the blocklist."""
        return self.blocklist_snapshot or self.data_dir / "blocklist.snapshot"

    def limits(self) -> Limits:
        """The receiver limits as one frozen, range-checked value."""
        names = Limits.__dataclass_fields__.keys()
        return Limits(**{name: getattr(self, name) for name in names})

    def api_limits(self) -> ApiLimits:
        """The API's limits as the frozen value api/ takes."""
        return ApiLimits(**{name: getattr(self, name) for name in API_RANGES})

    def webhook_limits(self) -> WebhookLimits:
        """The dispatcher's bounds and retry schedule as the frozen value webhooks/ takes."""
        return WebhookLimits(
            **{name: getattr(self, name) for name in WEBHOOK_RANGES},
            retry_schedule=parse_schedule(self.webhook_retry_schedule),
            allow_private=self.webhook_allow_private,
        )

    def webhook_api_base(self) -> str:
        """The API's base URL as a webhook names it."""
        if self.webhook_api_url:
            return self.webhook_api_url
        host, port = parse_hostport(self.api_listen)
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def store_config(self, uri: str) -> StoreConfig:
        """How every process talks to the store at `uri`."""
        from mailstore import StoreConfig  # the driver loads only in processes that use it

        return StoreConfig(
            uri=uri,
            database=self.mongodb_database,
            timeout=self.store_timeout,
            max_pending=self.max_pending_inserts,
            batch_size=self.insert_batch_size,
            retention=self.retention,
        )

    def admin_token_value(self) -> str | None:
        """The admin bearer token, if one is configured."""
        return self.admin_token.get_secret_value() if self.admin_token else None


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _toml_path(*sources: PydanticBaseSettingsSource) -> Path | None:
    for source in sources:
        data: dict[str, Any] = source()
        value = data.get("config_file")
        if value:
            return Path(value)
    return None


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read the settings once and check them all; raise `SettingsError` listing every
    problem, each named by its FLOODGATE_ variable (or TOML key)."""
    environ = os.environ if environ is None else environ
    problems = _unknown_variables(environ)
    named = overrides.get("config_file") or environ.get("FLOODGATE_CONFIG_FILE")
    unreadable = _toml_unreadable(Path(named)) if named else None
    if unreadable is not None:  # pydantic would raise it as a traceback
        raise SettingsError([*problems, unreadable])
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        # Every problem at once: the file's unknown keys too, and each bad value named
        # where it came from (the TOML key when neither a variable nor an argument won).
        path = Path(named) if named else None
        problems += _unknown_toml_keys(path)
        in_file = _toml_keys(path) - {k for k in Settings.model_fields if _variable(k) in environ}
        in_file -= set(overrides)
        problems += [
            _describe(item, path if _field(item) in in_file else None) for item in error.errors()
        ]
        if not any(item.get("loc", ("",))[0] == "data_dir" for item in error.errors()):
            problems += _data_dir_problems(Path(environ.get("FLOODGATE_DATA_DIR") or "var"))
        raise SettingsError(problems) from None
    problems += _unknown_toml_keys(settings.config_file)
    problems += _listen_collisions(settings)
    problems += _dependencies(settings)
    problems += _data_dir_problems(settings.data_dir)
    if problems:
        raise SettingsError(problems)
    settings.limits()  # every range was checked above; this cannot fail now
    return settings


def _variable(field: str) -> str:
    return "FLOODGATE_" + field.upper()


def _field(error: Any) -> str:
    return str(error["loc"][0]) if error.get("loc") else "?"


def _describe(error: Any, toml: Path | None = None) -> str:
    """One problem, named by its variable, or by its key in the TOML file `toml`."""
    field = _field(error)
    value = error.get("input")
    shown = f"={value!r}" if isinstance(value, str | int | float) else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    if toml is not None:
        return f"{toml}: key {field!r}{shown}: {message}"
    return f"{_variable(field)}{shown}: {message}"


_TOML_WHERE = re.compile(r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)$")


def _toml_unreadable(path: Path) -> str | None:
    """One line for a TOML settings file that exists but cannot be read or parsed: the
    file, the line and column, what is wrong. (A missing file is reported with the keys.)"""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        return f"FLOODGATE_CONFIG_FILE={str(path)!r}: cannot read it: {reason}"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        where = _TOML_WHERE.search(message)
        if where is not None and where.group(1):
            line, column = int(where.group(1)), int(where.group(2))
        else:  # the end of the document: its last line, past its last character
            lines = text.split("\n")
            line, column = len(lines), len(lines[-1]) + 1
        reason = message[: where.start()] if where is not None else message
        return f"{path}: line {line}, column {column}: {reason} (not valid TOML)"
    return None


def _toml_keys(path: Path | None) -> set[str]:
    """The keys a TOML settings file sets (none if it cannot be read: said elsewhere)."""
    if path is None:
        return set()
    try:
        return set(tomllib.loads(path.read_text()))
    except (OSError, tomllib.TOMLDecodeError):
        return set()


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    known = {_variable(name) for name in Settings.model_fields} | NOT_SETTINGS
    return [
        f"{name}: not a setting{_suggest(name, known)}"
        for name in sorted(environ)
        if name.startswith("FLOODGATE_") and name not in known
    ]


def _unknown_toml_keys(path: Path | None) -> list[str]:
    if path is None:
        return []
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        return [f"FLOODGATE_CONFIG_FILE={str(path)!r}: cannot read it: {error}"]
    known = set(Settings.model_fields)
    return [
        f"{path}: key {key!r} is not a setting{_suggest(key, known)}"
        for key in sorted(data)
        if key not in known
    ]


def _listen_collisions(settings: Settings) -> list[str]:
    seen: dict[tuple[str, int], str] = {}
    problems = []
    for field in ("smtp_listen", "api_listen", "receiver_http_listen", "webhooks_http_listen"):
        host, port = parse_hostport(getattr(settings, field))
        for (other_host, other_port), other in seen.items():
            wildcard = {host, other_host} & {"0.0.0.0", "::"}
            if port == other_port and (host == other_host or wildcard):
                problems.append(
                    f"{_variable(field)}={getattr(settings, field)!r}: the same address as "
                    f"{_variable(other)}; each listener needs its own port"
                )
        seen[(host, port)] = field
    return problems


def _dependencies(settings: Settings) -> list[str]:
    """Settings that only mean something together with another."""
    problems = []
    if settings.tls_key is not None and settings.tls_cert is None:
        problems.append("FLOODGATE_TLS_KEY is set without FLOODGATE_TLS_CERT")
    for name in ("tls_cert", "tls_key"):
        path = getattr(settings, name)
        if path is not None and not path.is_file():
            problems.append(f"{_variable(name)}={str(path)!r}: no such file")
    if settings.dnsbl_reply:
        try:
            dnsbl.parse_replies(settings.dnsbl_reply, settings.dnsbl_site_list)
        except ValueError as error:
            problems.append(f"FLOODGATE_DNSBL_REPLY={settings.dnsbl_reply!r}: {error}")
    if settings.public_inbox and settings.read_token is None:
        problems.append(
            "FLOODGATE_PUBLIC_INBOX=true: the page would carry a token, and only the read "
            "token may be public; set FLOODGATE_READ_TOKEN"
        )
    return problems


def _data_dir_problems(path: Path) -> list[str]:
    """The data directory must exist or be creatable, and be writable, at start-up."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        return [f"FLOODGATE_DATA_DIR={str(path)!r}: cannot create or write to it: {reason}"]
    return []
