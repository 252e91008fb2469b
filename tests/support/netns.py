"""Hosts on one machine: network namespaces on a LAN of their own, made and removed by a test.

A `Lan` is a bridge inside a namespace of its own; each `Host` is a namespace joined to it
by a veth pair, with its own loopback and the addresses the test gives it, so a process
there binds the very ports a production host would (25, 2525, 8026, ...) without meeting
anything else on this machine, and two tests can each have their own "10.0.1.11".

Code runs on a host through `Host.call`: a thread joins the host's namespace (setns(2)
changes only the calling thread), runs the function, and ends; every socket it creates,
and every process it starts (a child inherits its parent thread's namespace), lives on
that host for good. Nothing is added to the machine's own namespace: the bridge and the
veths live inside the namespaces, and `Lan.close` deletes them, their interfaces with them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tests.support.processes import running

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (a reason to skip), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"fgprobe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make a network namespace here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class Host:
    """One namespace on the LAN: `name` as the test calls it, `addresses` on its eth0."""

    name: str
    netns: str
    addresses: tuple[str, ...]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @property
    def address(self) -> str:
        return self.addresses[0]

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`function(*args, **kwargs)` run inside this host's network namespace."""
        outcome: dict[str, Any] = {}

        def inside() -> None:
            try:
                descriptor = os.open(f"{NETNS_DIR}/{self.netns}", os.O_RDONLY)
                try:
                    if _libc.setns(descriptor, CLONE_NEWNET) != 0:
                        error = ctypes.get_errno()
                        raise OSError(error, f"setns {self.netns}: {os.strerror(error)}")
                finally:
                    os.close(descriptor)
                outcome["value"] = function(*args, **kwargs)
            except BaseException as error:  # handed to the caller's thread
                outcome["error"] = error

        thread = threading.Thread(target=inside, name=f"in-{self.name}")
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        value: T = outcome["value"]
        return value

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """A process on this host (ended by `Lan.close` if the test has not, by its pid)."""
        process: subprocess.Popen[bytes] = self.call(subprocess.Popen, argv, **kwargs)
        self.processes.append(process)
        return process


class Lan:
    """A LAN of hosts (10.0.0.0/16 unless told otherwise); a context manager that removes
    every namespace it made, and ends every process its hosts started, even on failure."""

    def __init__(self, prefix_length: int = 16) -> None:
        self.tag = f"fg{secrets.token_hex(3)}"
        self.prefix_length = prefix_length
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        try:
            self.switch = self._namespace("lan")
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def _namespace(self, name: str) -> str:
        netns = f"{self.tag}-{name}"
        _ip("netns", "add", netns)
        self._namespaces.append(netns)
        _ip("-n", netns, "link", "set", "lo", "up")
        return netns

    def host(self, name: str, *addresses: str) -> Host:
        """A new host with `addresses` (the first is its own) on the LAN."""
        netns = self._namespace(name)  # recorded at once: close() removes it whatever fails
        port = f"p-{name}"[:15]
        _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", netns)  # fmt: skip
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        for address in addresses:
            _ip("-n", netns, "addr", "add", f"{address}/{self.prefix_length}", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        host = Host(name, netns, tuple(addresses))
        self.hosts[name] = host
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            for process in host.processes:
                end(process)
        for netns in self._namespaces:  # what our processes started there, by pid
            end_inside(netns)
        for netns in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=10)
        self._namespaces.clear()

    def __enter__(self) -> Lan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def end(process: subprocess.Popen[bytes], grace: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after `grace`: one process, by its pid."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


def inside(netns: str) -> list[int]:
    """The pids of the processes living in `netns`: only ours can (we made it)."""
    try:
        inode = os.stat(f"{NETNS_DIR}/{netns}").st_ino
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                    pids.append(int(entry))
            except OSError:  # gone meanwhile, or a kernel thread
                continue
    return pids


def end_inside(netns: str, grace: float = 5.0) -> None:
    """SIGTERM to every process in `netns`, SIGKILL to those left after `grace`."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        pids = inside(netns)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = [pid for pid in pids if running(pid)]
        if not pids:
            return


@contextlib.contextmanager
def lan() -> Iterator[Lan]:
    network = Lan()
    try:
        yield network
    finally:
        network.close()
