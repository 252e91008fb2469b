"""Start real Floodgate processes (receiver, API) on free loopback ports for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

STARTUP_TIMEOUT = 30.0
# tests/install-tools.sh installs HAProxy only when asked: the host is not ours.
HAPROXY_MISSING = "haproxy is not installed: FLOODGATE_INSTALL_TOOLS=1 make test installs it"


# The ports tests pick for listeners, below the kernel's ephemeral range (32768-60999 here):
# each pytest-xdist worker picks from its own slice, in turn. A port the kernel hands out
# (bind to 0) can be handed to another worker's process a moment after its owner let go;
# a client still aimed at it (a receiver's store monitor reconnecting to a store the test
# stopped) then talks to a stranger: a MongoDB hello before the banner counted as pregreet.
PORTS = range(20_000, 32_000)


class _Ports:
    """This test process's slice of `PORTS`, handed out in turn (a port comes back only
    after the whole slice: every process a test started is gone by then)."""

    def __init__(self) -> None:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        index = int(worker) if worker.isdigit() and int(worker) < count else 0
        size = len(PORTS) // max(count, 1)
        self.first = PORTS.start + index * size
        self.size = size
        self.next = int.from_bytes(os.urandom(2), "big") % size  # runs in a row: elsewhere

    def take(self, host: str) -> int:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(self.size):
            port = self.first + self.next
            self.next = (self.next + 1) % self.size
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))  # no SO_REUSEADDR: a TIME_WAIT port is skipped
                except OSError:
                    continue
            return port
        raise RuntimeError(f"no free port in {self.first}-{self.first + self.size - 1}")


_PORTS = _Ports()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free a moment ago, from this test process's own slice (the caller retries
    if it is taken meanwhile: `PortTaken`)."""
    return _PORTS.take(host)


def running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (exited, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children_running(module: str) -> list[int]:
    """This process's live children started as `python -m <module>`, as /proc sees them."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and module.encode() in argv:
            found.append(int(entry))
    return sorted(found)


def clean_environ() -> dict[str, str]:
    """The test runner's environment without any FLOODGATE_ setting leaking in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FLOODGATE_")}


@dataclass
class ServiceProcess:
    """One running `floodgate <role>` process."""

    role: str
    process: subprocess.Popen[bytes]
    host: str
    port: int
    http_port: int
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def start_service(
    role: str,
    env: Mapping[str, str],
    workdir: Path,
    *,
    host: str = "127.0.0.1",
    wait: bool = True,
    wrapper: tuple[str, ...] = (),
) -> ServiceProcess:
    """Start `python -m floodgate <role>` and wait until its /healthz answers.

    `wrapper` runs before it (e.g. `unshare` giving the process a mount of its own). A
    port picked free can be taken before the process binds it (tests run in parallel,
    and every outgoing connection takes a port from the same range): then the process
    starts again on other ports."""
    for _attempt in range(BIND_ATTEMPTS - 1):
        try:
            return _start(role, env, workdir, host=host, wait=wait, wrapper=wrapper)
        except PortTaken:
            continue
    return _start(role, env, workdir, host=host, wait=wait, wrapper=wrapper)


BIND_ATTEMPTS = 3


class PortTaken(RuntimeError):
    """The process exited because a port picked for it was taken meanwhile."""


def _start(
    role: str,
    env: Mapping[str, str],
    workdir: Path,
    *,
    host: str,
    wait: bool,
    wrapper: tuple[str, ...],
) -> ServiceProcess:
    port = free_port(host)
    http_port = free_port()  # health and API stay on 127.0.0.1
    while http_port == port:  # two picks of a free port can coincide
        http_port = free_port()
    full_env = clean_environ()
    full_env.update(
        {
            "FLOODGATE_DATA_DIR": str(workdir / f"{role}-{port}"),
            "FLOODGATE_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if role == "receiver":
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        full_env["FLOODGATE_SMTP_LISTEN"] = listen
        full_env["FLOODGATE_RECEIVER_HTTP_LISTEN"] = f"127.0.0.1:{http_port}"
    elif role == "webhooks":  # the dispatcher: only its health and metrics listen
        full_env["FLOODGATE_WEBHOOKS_HTTP_LISTEN"] = f"127.0.0.1:{http_port}"
        port = http_port
    else:
        full_env["FLOODGATE_API_LISTEN"] = f"127.0.0.1:{http_port}"
        port = http_port
    full_env.update(env)
    log_path = workdir / f"{role}-{port}.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "floodgate", role],
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    service = ServiceProcess(
        role,
        process,
        host if role == "receiver" else "127.0.0.1",
        port,
        http_port,
        log_path,
        full_env,
    )
    if wait:
        wait_healthy(service)
    return service


def wait_healthy(service: ServiceProcess, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            log = service.log()
            if "address already in use" in log.lower():
                raise PortTaken(f"{service.role} exited early:\n{log}")
            raise RuntimeError(f"{service.role} exited early:\n{log}")
        try:
            if httpx.get(f"{service.http_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    service.kill()
    raise RuntimeError(f"{service.role} did not become healthy:\n{service.log()}")
