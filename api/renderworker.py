"""A render worker process: `python -m api.renderworker MEMORY_BYTES`.

Reads jobs from stdin and writes answers to stdout, one at a time, as `processes.framed`
messages: a JSON head and a binary body. It sets its own address-space limit first
(RLIMIT_AS: what it may map beyond what it holds after start-up), so a message that needs
more memory fails here with MemoryError, or kills only this process; the API kills it at
the deadline (`api.renderpool`). After a job that left it large, it exits once it has
answered, and the pool starts a fresh one: Python does not give freed memory back.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys
from collections.abc import Callable
from typing import Any

from api import links, render
from processes.framed import read_message, write_message

Job = Callable[[dict[str, Any], bytes], tuple[dict[str, Any], bytes]]
RECYCLE_GROWTH = 32 * 1024 * 1024  # resident bytes gained past which a worker retires
_PAGE = resource.getpagesize()


def view(head: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], bytes]:
    return {"view": render.view(raw)}, b""


def attachment(head: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], bytes]:
    try:
        found, parts = render.attachment(raw, int(head["index"]), inline=bool(head.get("inline")))
    except render.Unextractable as error:
        return {"unextractable": str(error)}, b""
    if found is None:
        return {"missing": True, "parts": parts}, b""
    data, content_type, filename = found
    return {"content_type": content_type, "filename": filename, "parts": parts}, data


def links_and_codes(head: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], bytes]:
    try:
        subject, text, html, cut = render.read(raw)
    except render.Unparseable as error:
        return {"unparseable": str(error)}, b""
    contains = head.get("contains")
    wanted = str(contains) if contains is not None else None
    found = links.extract(subject, text, html, wanted)
    found["truncated"] = found["truncated"] or cut  # text past MAX_TEXT was not read
    prefix = render.signed_prefix(raw)
    if prefix is not None:  # DKIM l= left a tail unsigned: what only it has is marked
        try:
            signed: dict[str, Any] | None = links.extract(*render.bodies(prefix))
        except render.Unparseable:
            signed = None
        links.mark_unsigned(found, signed)
    return {"links": found}, b""


def search(head: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], bytes]:
    """For each message of the batch (`head["items"]`: its size in `raw` and its words)
    whether its text part or its HTML's visible text holds every one of its words."""
    matches, start = [], 0
    for item in head["items"]:
        message = raw[start : start + int(item["size"])]
        start += int(item["size"])
        try:
            _, text, html = render.bodies(message)
        except render.Unparseable:
            matches.append(False)
            continue
        texts = (text or "", links.visible_text(html))
        matches.append(all(links.body_contains(str(w), *texts) for w in item["words"]))
    return {"matches": matches}, b""


JOBS: dict[str, Job] = {
    "view": view,
    "attachment": attachment,
    "links": links_and_codes,
    "search": search,
}


def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def _die_with_parent() -> None:
    """Linux PR_SET_PDEATHSIG: killed with the API, even in the middle of a job."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the API died before the call took effect
        os._exit(0)


def serve(jobs: dict[str, Job], memory: int) -> None:
    """Answer jobs until stdin closes (or until this process has grown: it then exits)."""
    _die_with_parent()
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * _PAGE
    resource.setrlimit(resource.RLIMIT_AS, (mapped + memory, mapped + memory))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames may reach the pipe
    baseline = resident()
    write_message(stdout, {"ready": True})
    while (frame := read_message(stdin)) is not None:
        head, body = frame
        try:
            answer, data = jobs[head["job"]](head, body)
        except MemoryError:
            answer, data = {"failed": "needs more memory than a render may use"}, b""
        del body, frame
        retire = resident() - baseline > RECYCLE_GROWTH
        write_message(stdout, {**answer, "retire": retire}, data)
        if retire:
            return


def main(jobs: dict[str, Job] = JOBS) -> None:
    serve(jobs, int(sys.argv[1]))


if __name__ == "__main__":
    main()
