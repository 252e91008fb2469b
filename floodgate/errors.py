"""How a Floodgate process stops when it can never work as configured."""

from __future__ import annotations

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
