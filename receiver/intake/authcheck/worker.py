"""A signature verification worker: `python -m receiver.intake.authcheck.worker`.

Reads jobs on stdin and answers on stdout, one at a time, each a frame of a 4-octet
length and JSON (a message's bytes follow its job as a second frame). The receiver kills
a worker whose answer is late and starts another; nothing here needs cleaning up.
"""

from __future__ import annotations

import json
import sys
from typing import BinaryIO

from receiver.intake.authcheck.signatures import verify


def _read(stream: BinaryIO) -> bytes | None:
    size = stream.read(4)
    if len(size) < 4:
        return None
    data = stream.read(int.from_bytes(size, "big"))
    return data


def _write(stream: BinaryIO, data: bytes) -> None:
    stream.write(len(data).to_bytes(4, "big") + data)
    stream.flush()


def main() -> None:
    import dkim  # noqa: F401  # loaded before "ready": the first job pays no import

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    _write(stdout, b'{"ready": true}')
    while True:
        head = _read(stdin)
        raw = _read(stdin) if head is not None else None
        if head is None or raw is None:
            return  # the receiver closed our stdin: it is stopping
        job = json.loads(head)
        todo = [(int(index), str(name)) for index, name in job["todo"]]
        outcome = verify(raw, dict(job["keys"]), todo, bool(job["arc"]))
        _write(stdout, json.dumps(outcome).encode())


if __name__ == "__main__":
    main()
