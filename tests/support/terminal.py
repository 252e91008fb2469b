"""`floodgate top` in a pseudo-terminal: read what it draws, press its keys."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ADMIN_TOKEN
from tests.support.processes import clean_environ


def top_env(data_dir: Path) -> dict[str, str]:
    """The environment `floodgate top` runs in here: a fixed-size terminal, our token."""
    return {
        **clean_environ(),
        "FLOODGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "FLOODGATE_DATA_DIR": str(data_dir),
        "COLUMNS": "140",
        "LINES": "40",
        "TERM": "xterm",
    }


class Top:
    """The interactive view, refreshed every half second; ended by `close` whatever
    happens (it is our process: killed by its handle, never by name)."""

    def __init__(self, api_url: str, data_dir: Path) -> None:
        self.leader, follower = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "floodgate", "top", "--api", api_url, "--interval", "0.5"],
            env=top_env(data_dir),
            stdin=follower,
            stdout=follower,
            stderr=follower,
            close_fds=True,
        )
        os.close(follower)
        self.screen = b""

    def read_until(
        self, needle: bytes, within: float, meanwhile: Callable[[], object] = lambda: None
    ) -> None:
        """Read the screen until `needle` is on it (fails after `within` seconds),
        calling `meanwhile` between reads."""
        deadline = time.monotonic() + within
        while needle not in self.screen:
            meanwhile()
            assert time.monotonic() < deadline, self.screen[-2000:]
            ready, _, _ = select.select([self.leader], [], [], 0.2)
            if ready:
                try:
                    self.screen += os.read(self.leader, 65536)
                except OSError:
                    break

    def press(self, key: bytes) -> None:
        os.write(self.leader, key)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        os.close(self.leader)
