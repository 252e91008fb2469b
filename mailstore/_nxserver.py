"""Entry point that runs the nx-27017 server with its per-command logging turned down.

nx-27017 logs every wire command at INFO; at a thousand messages a second that is a
log line per insert and a measurable share of the store's CPU. Warnings still reach the log.
"""

from __future__ import annotations

import logging
from typing import Any


def main() -> None:
    """Run nx-27017 exactly as its own console script would, logging at WARNING."""
    from nx_27017.nx_27017 import main as nx_main

    original = logging.basicConfig

    def quiet_basic_config(**kwargs: Any) -> None:
        kwargs["level"] = logging.WARNING
        original(**kwargs)

    logging.basicConfig = quiet_basic_config
    nx_main()


if __name__ == "__main__":
    main()
