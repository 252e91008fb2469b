"""How a Floodgate process stops when it can never work as configured."""

from __future__ import annotations

import sys
from typing import NoReturn

CONFIG_ERROR = 2  # the supervisor does not restart a child that exits with this


def fail(message: str) -> NoReturn:
    """Print `message` and exit with CONFIG_ERROR."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(CONFIG_ERROR)
