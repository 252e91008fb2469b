"""The embedded store: an nx-27017 server (MongoDB wire protocol over SQLite) on loopback.

Used when no MongoDB URI is configured. The code talks to it through the same driver path
as to a replica set; only the URI differs (`directConnection=true`, since it has no
replica-set name).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

STARTUP_TIMEOUT = 20.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedStore:
    """One supervised nx-27017 process whose files live under `directory`."""

    directory: Path
    host: str = "127.0.0.1"
    port: int = 0
    trace_sql: Path | None = None  # every SQL statement the server runs, appended here
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    def start(self, timeout: float = STARTUP_TIMEOUT) -> str:
        """Start the server and wait until it answers `ping`; returns its URI."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for _attempt in range(5):
            self.port = self.port or free_port(self.host)
            self.process = self._spawn()
            if self._wait_ready(timeout):
                return self.uri
            self.stop()
            self.port = 0
        raise RuntimeError(f"embedded store did not start; see {self.log_path}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        pid_file = self.directory / "nx-27017.pid"
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()  # a stale pid file from a killed run blocks start-up
        command = [
            sys.executable,
            "-m",
            "mailstore._nxserver",
            "--db",
            str(self.database_path),
            "--host",
            self.host,
            "--port",
            str(self.port),
            # Each instance needs its own pid and log file, or a second one refuses to start.
            "--pid-file",
            str(pid_file),
            "--log-file",
            str(self.log_path),
        ]
        if self.trace_sql is not None:
            command += ["--trace-sql", str(self.trace_sql)]
        stdio = open(self.directory / "nx-27017.stdio", "ab")
        try:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdio,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not the store
            )
        finally:
            stdio.close()

    @property
    def database_path(self) -> Path:
        """The SQLite file that holds every collection."""
        return self.directory / "floodgate.db"

    @property
    def log_path(self) -> Path:
        return self.directory / "nx-27017.log"

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            if ping(self.uri, timeout=0.5):
                return True
            time.sleep(0.05)
        return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it does not exit in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def kill(self) -> None:
        """Kill the server abruptly (tests use this to simulate a lost store)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)


def ping(uri: str, timeout: float = 1.0) -> bool:
    """Whether a MongoDB server at `uri` answers `ping` within `timeout` seconds."""
    ms = max(1, int(timeout * 1000))
    client: MongoClient[dict[str, object]] = MongoClient(
        uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()
