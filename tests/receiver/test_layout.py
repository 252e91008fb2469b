"""The receiver's layout: data flows one way, and the store's driver stays out of it."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import receiver.server, receiver.smtp, receiver.door.admission
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('pymongo', 'bson', 'motor'))
print(','.join(loaded))
"""


def test_the_receiver_imports_no_mongodb_driver() -> None:
    # The store is reached through the Sink protocol; the receiver's own modules use
    # only the store's driver-free types (message, errors, ids, header scan, grammar).
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_the_session_engine_never_imports_the_server() -> None:
    probe = "import sys, receiver.smtp; print('receiver.server' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
