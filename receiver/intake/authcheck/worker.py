"""A signature verification worker: `python -m receiver.intake.authcheck.worker`.

Reads jobs on stdin and answers on stdout, one at a time, as `processes.framed` messages
(a JSON head and a binary body: the job and the message's bytes; the outcome and nothing).
The receiver kills a worker whose answer is late and starts another; nothing here needs
cleaning up.
"""

from __future__ import annotations

import sys

from processes.framed import read_message, write_message
from receiver.intake.authcheck.signatures import verify


def main() -> None:
    import dkim  # noqa: F401  # loaded before "ready": the first job pays no import

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    write_message(stdout, {"ready": True})
    while (request := read_message(stdin)) is not None:  # None: the receiver is stopping
        job, raw = request
        todo = [(int(index), str(name)) for index, name in job["todo"]]
        write_message(stdout, verify(raw, dict(job["keys"]), todo, bool(job["arc"])))


if __name__ == "__main__":
    main()
