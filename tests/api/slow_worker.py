"""A render worker with extra jobs, for the pool's tests: `spin` burns CPU until killed,
`hog` maps memory until its limit, `echo` answers what it was given."""

from __future__ import annotations

from typing import Any

from api.renderworker import JOBS, main


def spin(head: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
    while True:
        pass


def hog(head: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
    blocks = []
    while True:
        blocks.append(bytearray(16 * 1024 * 1024))


def echo(head: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
    return {"echo": head}, body


if __name__ == "__main__":
    main({**JOBS, "spin": spin, "hog": hog, "echo": echo})
