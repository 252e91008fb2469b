"""Every limit the receiver enforces, as one frozen value with its defaults beside it.

The stressed variant is a `dataclasses.replace` of the normal one (Postfix's
`${stress?{10}:{300}}`), never `if`s scattered through the session code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Postfix equivalents are named beside each default; the README repeats them.


def _check(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name}={value} is out of range [{low}, {high}]")


# Accepted range of every limit: `Limits` checks it, and the settings declare each
# FLOODGATE_ variable's range from it, so a range is written once.
RANGES: dict[str, tuple[float, float]] = {
    "max_connections": (1, 1_000_000),
    "max_connections_per_ip": (1, 1_000_000),
    "allowlist_max_connections_per_ip": (1, 1_000_000),
    "ipv6_prefix": (32, 128),
    "connection_rate": (0, 10_000_000),
    "message_rate": (0, 10_000_000),
    "recipient_rate": (0, 10_000_000),
    "mailbox_rate": (0, 10_000_000),
    "mailbox_max_messages": (0, 10_000_000),
    "rate_clients": (100, 10_000_000),
    "idle_timeout": (0.1, 3600),
    "session_timeout": (0.1, 86_400),
    "data_timeout": (0.1, 86_400),
    "min_data_rate": (0, 1_000_000_000),
    "greet_wait": (0, 60),
    # BSON documents stop at 16 MiB; keep headroom for metadata and our Received line.
    "max_message_size": (1024, 15 * 1024 * 1024),
    "max_recipients": (1, 10_000),
    "max_data_memory": (1024 * 1024, 1 << 40),
    "max_commands": (10, 1_000_000),
    "junk_command_limit": (1, 1_000_000),
    "hard_error_limit": (1, 10_000),
    "stress_threshold": (0.01, 1.0),
    "stress_idle_timeout": (0.1, 3600),
    "stress_hard_error_limit": (1, 10_000),
    "autoban_threshold": (0, 1_000_000),
    "autoban_refusal_threshold": (0, 10_000_000),
    "autoban_window": (1, 86_400),
    "autoban_ttl": (1, 31 * 86_400),
    "tls_max_handshakes": (1, 100_000),
    "tls_max_handshakes_per_ip": (1, 10_000),
    "tls_max_handshakes_per_network": (1, 100_000),
    "tls_handshake_rate": (0, 10_000_000),
    "tls_handshake_timeout": (0.5, 300),
    "tls_hello_timeout": (0.5, 300),
    "dnsbl_threshold": (1, 1_000),
    "screen_timeout": (0.05, 30),
    "stress_screen_timeout": (0.01, 30),
    "dnsbl_pass_ttl": (0, 7 * 86_400),
    "dns_max_in_flight": (1, 100_000),
    "dns_rate": (1, 1_000_000),
    "dns_network_rate": (0, 10_000_000),
    "proxy_max_pending": (1, 1_000_000),
    "karma_messages": (0, 1_000_000),
    "karma_window": (60, 7 * 86_400),
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Connection, dialogue and rate limits for one receiver."""

    max_connections: int = 10_000  # Postfix: default_process_limit (100)
    # Above a default MTA's per-destination concurrency: Postfix opens up to
    # default_destination_concurrency_limit = 20 connections to one MX (Exim up to
    # remote_max_parallel = 4), and opens the next as soon as it has read our 221, before
    # our side of the closed one is gone: a cap of exactly 20 refused a stock Postfix 15-18
    # times in 300 messages. Half again as many leaves that race room (Postfix's own
    # smtpd_client_connection_count_limit is 50).
    max_connections_per_ip: int = 30
    # Allowlisted senders: no rates, no auto-ban, but a concurrency cap of their own
    # (smtpd_client_event_limit_exceptions exempts them from Postfix's limits entirely).
    allowlist_max_connections_per_ip: int = 50
    ipv6_prefix: int = 64  # smtpd_client_ipv6_prefix_length? (anvil: none)
    # Rates cap a flood's share; they are not there to shape a real MTA's burst. Postfix
    # with TLS required reuses no connection (smtp_tls_connection_reuse = no), so each of
    # its messages is a connection and a handshake: a few hundred queued messages arrive
    # as a few hundred connections within seconds, and the bucket's burst (one minute's
    # worth) takes them without a deferral.
    connection_rate: int = 600  # per client per minute; smtpd_client_connection_rate_limit
    message_rate: int = 600  # per client per minute; smtpd_client_message_rate_limit
    recipient_rate: int = 6000  # per client per minute; smtpd_client_recipient_rate_limit
    mailbox_rate: int = 0  # messages accepted per mailbox per minute, all senders; 0 = off
    mailbox_max_messages: int = 500  # kept per mailbox, oldest trimmed; 0 = no cap
    rate_clients: int = 100_000  # clients tracked by the rate table (LRU beyond)
    idle_timeout: float = 60.0  # smtpd_timeout (300s, stressed 10s)
    session_timeout: float = 600.0  # no Postfix equivalent
    data_timeout: float = 300.0  # whole DATA phase
    min_data_rate: int = 500  # bytes/s, smtpd_min_data_rate
    greet_wait: float = 0.0  # postscreen_greet_wait (6s), 0 = off
    max_message_size: int = 10 * 1024 * 1024  # message_size_limit
    max_recipients: int = 100  # smtpd_recipient_limit (1000)
    max_data_memory: int = 512 * 1024 * 1024  # message bytes all sessions may hold at once
    max_commands: int = 1_000  # commands per session, any kind
    junk_command_limit: int = 100  # NOOP/RSET/VRFY/HELP per session; smtpd_junk_command_limit
    hard_error_limit: int = 20  # smtpd_hard_error_limit (stressed 1)
    stress_threshold: float = 0.75  # fraction of max_connections that turns stress on
    stress_idle_timeout: float = 10.0
    stress_hard_error_limit: int = 1
    # Auto-ban (receiver.door.admission): protocol violations, which a compliant client never
    # commits, ban after `autoban_threshold` within the window; connections refused at
    # connect (caps, connection rate) only after `autoban_refusal_threshold`, a count a
    # retrying MTA never reaches (README: "Auto-ban" has the arithmetic).
    autoban_threshold: int = 50
    autoban_refusal_threshold: int = 1000
    autoban_window: float = 300.0
    autoban_ttl: float = 3600.0
    # STARTTLS: handshakes cost far more CPU than a refusal, so they have a budget of their
    # own (Postfix has none; its tlsproxy and process limit bound them indirectly). A slot
    # is taken only once a complete ClientHello has arrived, so silence holds none.
    tls_max_handshakes: int = 64  # concurrent handshakes, all clients
    tls_max_handshakes_per_ip: int = 30  # per client: as many as its connections
    tls_max_handshakes_per_network: int = 32  # per IPv4 /24 or IPv6 /48
    tls_handshake_rate: int = 600  # per client per minute, as connections; 0 = no limit
    tls_handshake_timeout: float = 10.0  # the whole handshake, from the ClientHello
    tls_hello_timeout: float = 5.0  # from our 220 to a complete ClientHello
    # Screening before the banner (receiver.door.screen), off unless lists or reverse DNS are
    # configured. A score at or above the threshold refuses.
    dnsbl_threshold: int = 1  # postscreen_dnsbl_threshold (1)
    # The screen's deadline when the pregreet wait is off (within it when on): what a
    # clean client may wait for its banner at worst. Postscreen waits up to its greet wait.
    screen_timeout: float = 1.0
    stress_screen_timeout: float = 0.25  # under stress: tighter deadline, same verdicts
    dnsbl_pass_ttl: float = 3600.0  # a pass is cached this long; postscreen_dnsbl_max_ttl
    dns_max_in_flight: int = 1_000  # lookups awaiting an answer; past it: not sent
    dns_rate: int = 2_000  # lookups sent per second (a one-second burst); past it: not sent
    # The screen's lookups per minute for one IPv4 /24 or IPv6 /48 (a burst of as many); a
    # new client of a network past it hears 421 instead of going unscreened. 0 = no budget.
    dns_network_rate: int = 300
    # PROXY headers awaited at once from one trusted proxy: a proxy sends its header with
    # its first bytes, so only a stalled or hostile one ever holds many (no Postfix one).
    proxy_max_pending: int = 512
    # Karma (Haraka's): a client whose last `karma_messages` authenticated messages (SPF or
    # DKIM pass, with the authentication checks on) came within `karma_window` and who
    # committed no violation since is treated as allowlisted for caps and rates (never for
    # bans): a real sender's backlog goes through in one pass. 0 = off.
    karma_messages: int = 20
    karma_window: float = 3600.0

    def __post_init__(self) -> None:
        for name, (low, high) in RANGES.items():
            _check(name, getattr(self, name), low, high)

    def stressed(self) -> Limits:
        """The limits that apply while the receiver is under connection stress."""
        return dataclasses.replace(
            self,
            idle_timeout=min(self.idle_timeout, self.stress_idle_timeout),
            hard_error_limit=min(self.hard_error_limit, self.stress_hard_error_limit),
            screen_timeout=min(self.screen_timeout, self.stress_screen_timeout),
        )

    @property
    def stress_connections(self) -> int:
        """Open connections at or above which stress mode is on."""
        return max(1, int(self.max_connections * self.stress_threshold))


DEFAULTS = Limits()
