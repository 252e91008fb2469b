"""Synchronous children: a spawn with its descriptors and environment spelled out, and a stop
that always ends within its deadline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any


def spawn(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    cwd: str | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `command` with no standard input (a child never reads the parent's terminal)
    and only the descriptors named in `pass_fds`."""
    return subprocess.Popen(
        list(command),
        env=dict(env) if env is not None else None,
        pass_fds=tuple(pass_fds),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        start_new_session=new_session,
    )


def stop(process: subprocess.Popen[bytes], grace: float, *, group: bool = False) -> int:
    """SIGTERM, up to `grace` seconds to exit (a receiver drains its sessions meanwhile),
    then SIGKILL; returns the exit status. Only ever the process it was given: never by
    name. With `group` (a process started in a session of its own), the SIGKILL goes to
    its process group: it and the processes it started."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                if group:
                    os.killpg(process.pid, signal.SIGKILL)
                else:
                    process.kill()
            process.wait()
    return process.returncode


async def stop_all(children: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """`stop` for several children at once, without blocking an event loop: SIGTERM to
    each, then up to `grace` seconds for all to exit, then SIGKILL to the rest."""
    for child in children:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for _ in range(int(grace / 0.05) + 1):  # polled: a Popen has no event to wait on
        if time.monotonic() >= deadline or all(c.poll() is not None for c in children):
            break
        await asyncio.sleep(0.05)
    for child in children:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await asyncio.to_thread(child.wait)
