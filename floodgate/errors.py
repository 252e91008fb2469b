"""How a Floodgate process stops when it can never work as configured."""

from __future__ import annotations

import errno
import sys
from typing import NoReturn

CONFIG_ERROR = 2  # the supervisor does not restart a child that exits with this


def fail(message: str) -> NoReturn:
    """Print `message` and exit with CONFIG_ERROR."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(CONFIG_ERROR)


NOT_YET = 1  # may work later: systemd's Restart= tries again (RestartPreventExitStatus=2)


def not_yet(message: str) -> NoReturn:
    """Print `message` and exit with NOT_YET: the condition may pass (an address the
    network has not brought up yet, at boot), so the service manager should retry."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(NOT_YET)


def must_listen(process: str, host: str, port: int) -> None:
    """Return if `host:port` can be listened on now; else exit NOT_YET when the address is
    not this host's yet (at boot, before the network is up: systemd retries) and
    CONFIG_ERROR otherwise (the port is taken, ...), with one line saying which."""
    from floodgate.settings import cannot_bind

    error = cannot_bind(host, port)
    if error is None:
        return
    message = f"floodgate {process}: cannot listen on {host}:{port}: {error.strerror}"
    if error.errno == errno.EADDRNOTAVAIL:
        not_yet(message)
    fail(message)
