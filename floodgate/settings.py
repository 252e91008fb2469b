"""Settings: read once at start-up from `FLOODGATE_` variables (and an optional TOML file),
validated, then passed down as frozen values. Nothing else reads `os.environ`."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from blocklist.entries import normalize
from receiver.limits import DEFAULTS as LIMIT_DEFAULTS
from receiver.limits import Limits
from receiver.smtp.body import BareNewline

_L = LIMIT_DEFAULTS


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
    data_dir: Path = Path("var")

    # Listeners and identity.
    domains: str = "mx.test"
    hostname: str | None = None
    smtp_listen: str = "127.0.0.1:2525"
    api_listen: str = "127.0.0.1:8025"
    receiver_http_listen: str = "127.0.0.1:8026"
    admin_token: SecretStr | None = None
    proxy_protocol: bool = False
    trusted_proxies: str = ""
    allowlist: str = ""  # static allowlist entries (CIDRs), merged with the stored ones
    proxy_protocol_timeout: float = Field(5.0, ge=3, le=60)
    reverse_dns: bool = False
    dns_timeout: float = Field(2.0, gt=0, le=10)
    shutdown_grace: float = Field(30.0, ge=0, le=600)
    # Bare CR/LF or NUL in message content: reject (521, close) | normalize | accept.
    bare_newline: BareNewline = BareNewline.REJECT
    log_level: str = "INFO"
    log_summary_interval: float = Field(10.0, ge=1, le=3600)

    # Blocklist sync.
    blocklist_resync_interval: float = Field(30.0, ge=1, le=3600)
    blocklist_max_staleness: float = Field(120.0, ge=1, le=86_400)
    blocklist_change_stream: bool = True
    blocklist_snapshot: Path | None = None  # default: <data_dir>/blocklist.snapshot
    blocklist_memo_size: int = Field(65_536, ge=0, le=10_000_000)

    # Receiver limits (see receiver/limits.py for the ranges and Postfix equivalents).
    max_connections: int = _L.max_connections
    max_connections_per_ip: int = _L.max_connections_per_ip
    allowlist_max_connections_per_ip: int = _L.allowlist_max_connections_per_ip
    ipv6_prefix: int = _L.ipv6_prefix
    connection_rate: int = _L.connection_rate
    message_rate: int = _L.message_rate
    recipient_rate: int = _L.recipient_rate
    rate_clients: int = _L.rate_clients
    idle_timeout: float = _L.idle_timeout
    session_timeout: float = _L.session_timeout
    data_timeout: float = _L.data_timeout
    min_data_rate: int = _L.min_data_rate
    greet_wait: float = _L.greet_wait
    max_message_size: int = _L.max_message_size
    max_recipients: int = _L.max_recipients
    max_data_memory: int = _L.max_data_memory
    max_commands: int = _L.max_commands
    junk_command_limit: int = _L.junk_command_limit
    hard_error_limit: int = _L.hard_error_limit
    stress_threshold: float = _L.stress_threshold
    stress_idle_timeout: float = _L.stress_idle_timeout
    stress_hard_error_limit: int = _L.stress_hard_error_limit
    autoban_threshold: int = _L.autoban_threshold
    autoban_window: float = _L.autoban_window
    autoban_ttl: float = _L.autoban_ttl

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
            if " " in domain or "@" in domain:
                raise ValueError(f"{domain!r} is not a domain name")
        return ",".join(domains)

    @field_validator("smtp_listen", "api_listen", "receiver_http_listen")
    @classmethod
    def _listen_valid(cls, value: str) -> str:
        parse_hostport(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_valid(cls, value: str) -> str:
        for item in _split(value):
            ipaddress.ip_network(item, strict=False)
        return value

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


def load(**overrides: Any) -> Settings:
    """Read the settings once; raises `pydantic.ValidationError` with every problem found."""
    settings = Settings(**overrides)
    settings.limits()  # range-check the limits now, at start-up, not mid-session
    return settings
