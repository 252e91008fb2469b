"""What every benchmark needs: real processes on free loopback ports, timing and /proc reads.

Benchmarks start the same processes users run (`python -m floodgate receiver|api`, the
embedded store) and drive them over real sockets; nothing leaves loopback.
"""

from __future__ import annotations

import os
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

TOKEN = "bench-" + secrets.token_hex(12)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready within {timeout}s")


@dataclass
class Service:
    role: str
    process: subprocess.Popen[bytes]
    port: int
    http_port: int
    log: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_service(role: str, env: dict[str, str], workdir: Path) -> Service:
    """Start `python -m floodgate <role>` and wait for its health endpoint."""
    port, http_port = free_port(), free_port()
    while http_port == port:  # two picks of a free port can coincide
        http_port = free_port()
    full = {
        **os.environ,
        "FLOODGATE_DATA_DIR": str(workdir / f"{role}-{port}"),
        "FLOODGATE_ADMIN_TOKEN": TOKEN,
        "FLOODGATE_LOG_LEVEL": "WARNING",
        "FLOODGATE_HOSTNAME": "mx.bench.test",  # never look our own name up
    }
    if role == "receiver":
        full["FLOODGATE_SMTP_LISTEN"] = f"127.0.0.1:{port}"
        full["FLOODGATE_RECEIVER_HTTP_LISTEN"] = f"127.0.0.1:{http_port}"
    elif role == "webhooks":  # the dispatcher: only its health and metrics listen
        full["FLOODGATE_WEBHOOKS_HTTP_LISTEN"] = f"127.0.0.1:{http_port}"
        port = http_port
    else:
        full["FLOODGATE_API_LISTEN"] = f"127.0.0.1:{http_port}"
        port = http_port
    full.update(env)
    log = workdir / f"{role}-{port}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "floodgate", role],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
        )
    service = Service(role, process, port, http_port, log)
    try:
        wait_http(service.http_url + "/healthz")
    except RuntimeError:
        service.stop()
        raise RuntimeError(f"{role} did not start:\n{log.read_text()[-2000:]}") from None
    return service


@contextmanager
def embedded_store(workdir: Path) -> Iterator[str]:
    from mailstore.embedded import EmbeddedStore

    store = EmbeddedStore(workdir / "store")
    uri = store.start()
    try:
        yield uri
    finally:
        store.stop()


def proc_status(pid: int, field: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def metric(url: str, name: str, **labels: str) -> float:
    """A metric of the service at `url`, summed over the samples matching `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
