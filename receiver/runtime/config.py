"""What a receiver host needs, resolved from settings at start-up (floodgate.receiver_app)
into frozen values and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from receiver.door.gate import Network
from receiver.door.screen import ScreenConfig
from receiver.intake.authcheck import AuthConfig
from receiver.limits import Limits
from receiver.runtime.intervals import Intervals
from receiver.smtp.body import BareNewline
from receiver.smtp.tls import TlsSettings


@dataclass(frozen=True)
class SpoolSettings:
    """The local spool (receiver.delivery.spool): where, how big, how fast it drains."""

    directory: Path
    max_bytes: int = 1 << 30
    min_free: int = 256 << 20  # bytes of the disk the spool never eats into
    replay_rate: float = 500.0  # messages per second into a recovering store
    # Spools no running worker writes any more (another worker count before this start):
    # this worker replays them beside its own, so what they hold is stored all the same.
    adopt: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ReceiverConfig:
    """Everything the receiver needs, resolved from settings at start-up."""

    hostname: str
    domains: frozenset[str]
    limits: Limits
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    http_host: str = "127.0.0.1"
    http_port: int = 8026
    workers: int = 1  # worker processes; 1: the host's one worker runs in its own process
    proxy_protocol: bool = False
    trusted_proxies: tuple[Network, ...] = ()
    proxy_timeout: float = 5.0
    screen: ScreenConfig = field(default_factory=ScreenConfig)  # off unless configured
    dns_servers: tuple[tuple[str, int], ...] = ()  # the screen's resolvers
    dns_0x20: bool = False  # DNS 0x20 case randomisation on every query
    shutdown_grace: float = 30.0
    store_timeout: float = 5.0  # the insert deadline; write probes get the same
    log_summary_interval: float = 10.0
    blocklist_max_staleness: float = 120.0
    bare_newline: BareNewline = BareNewline.REJECT
    data_dir: Path = field(default_factory=lambda: Path("var"))
    tls: TlsSettings | None = None  # STARTTLS offered when set
    spool: SpoolSettings | None = None  # None: the store away means 451
    auth: AuthConfig | None = None  # authentication verdicts (receiver.intake) when set
    intervals: Intervals = field(default_factory=Intervals)

    @property
    def host_id(self) -> str:
        """This host among the others: its hostname and listen address. Its statistics
        document is keyed by it; each worker's probe and sweep lease by `worker_id`."""
        return f"{self.hostname} {self.smtp_host}:{self.smtp_port}"

    def worker_id(self, index: int) -> str:
        return f"{self.host_id}/w{index}"

    def spool_for(self, index: int) -> SpoolSettings | None:
        """Worker `index`'s spool: one writer per directory (`spool` for a host of one
        worker, `spool-w<i>` for worker i of several); worker 1 adopts what another
        worker count left behind."""
        if self.spool is None:
            return None
        own = spool_directory(self.data_dir, index, self.workers)
        adopt = leftover_spools(self.data_dir, self.workers) if index == 1 else ()
        return SpoolSettings(
            own, self.spool.max_bytes, self.spool.min_free, self.spool.replay_rate, adopt
        )


def spool_directory(data_dir: Path, index: int, workers: int) -> Path:
    return data_dir / "spool" if workers == 1 else data_dir / f"spool-w{index}"


def spool_directories(data_dir: Path) -> list[Path]:
    """Every spool directory under `data_dir`, whichever worker count wrote it."""
    found = [data_dir / "spool", *sorted(data_dir.glob("spool-w*"))]
    return [path for path in found if path.is_dir()]


def leftover_spools(data_dir: Path, workers: int) -> tuple[Path, ...]:
    """Spool directories no worker of this host writes with `workers` workers: what a
    start with another worker count left. Worker 1 replays them: accepted mail is stored
    whatever the operator changed."""
    own = {spool_directory(data_dir, i, workers) for i in range(1, workers + 1)}
    return tuple(path for path in spool_directories(data_dir) if path not in own)
