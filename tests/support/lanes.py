"""Which lane a test runs in, from what it uses; and the guard that keeps the in-process
lane honest.

A test is in a lane when its body, a fixture it uses (autouse ones too), or a helper of
ours that either calls (followed through tests/ functions and classes, to any depth) names
one of the lane's names. Nothing is marked by hand, and nothing needs to be: a test that
starts a process the scan did not see fails in the in-process lane (`guard`), so a miss
is found by `make check` rather than hidden in it.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# A lane and the names whose use puts a test in it. `process`: starts Floodgate, a store,
# a worker pool or a tool (anything through `subprocess` or asyncio's subprocesses).
NAMES = {
    "process": {
        "subprocess",
        "create_subprocess_exec",
        "create_subprocess_shell",
        "subprocess_exec",
        "start_service",
        "EmbeddedStore",
        "RenderPool",
        "Verifier",
        "AuthChecker",  # owns a Verifier
    },
    "browser": {"webdriver"},  # selenium driving chromium
    "postfix": {"private_postfix"},  # tests/support/postfix.py
}
BENCH = Path(__file__).resolve().parents[1] / "bench"  # tests/bench: runs bench suites
LANES = ("process", "browser", "bench", "postfix")  # registered in pyproject.toml


def lanes_of(item: pytest.Item) -> set[str]:
    """The lanes `item` belongs to (none: the in-process lane)."""
    found = {lane for lane in LANES if item.get_closest_marker(lane) is not None}
    if Path(str(item.path)).is_relative_to(BENCH):
        found.add("bench")
    names = set()
    for function in _functions(item):
        names |= _names_used(function, set())
    for lane, lane_names in NAMES.items():
        if names & lane_names:
            found.add(lane)
    return found


def _functions(item: pytest.Item) -> Iterator[Callable[..., Any]]:
    """The test function and the functions of every fixture it uses that are ours."""
    function = getattr(item, "obj", None)
    if function is not None:
        inner = getattr(getattr(function, "hypothesis", None), "inner_test", None)
        yield inspect.unwrap(inner or function)
    info = getattr(item, "_fixtureinfo", None)
    for definitions in info.name2fixturedefs.values() if info else ():
        for definition in definitions:
            if _ours(definition.func):
                yield inspect.unwrap(definition.func)


def module_scoped(item: pytest.Item) -> bool:
    """True when `item` uses a fixture of ours set up once per module (a process the
    module's tests share, say)."""
    info = getattr(item, "_fixtureinfo", None)
    return any(
        definition.scope == "module" and _ours(definition.func)
        for definitions in (info.name2fixturedefs.values() if info else ())
        for definition in definitions
    )


def name_group(item: pytest.Item, group: str) -> None:
    """Tell xdist's scheduler `item`'s group (an xdist worker, --dist loadgroup).

    xdist marks a group by appending `@group` to the node id, and so it does, but from
    pytest 9.2 on a node id is a structured value its assignment misses: the groups are
    dropped without a word (pytest-dev/pytest-xdist#1386). Until xdist sets it itself,
    the suffix is set here; harmless where xdist's works (the scheduler takes the text
    after the last `@`)."""
    ident = getattr(item, "_id", None)
    if ident is None or str(ident).endswith(f"@{group}"):
        return
    setattr(item, "_id", type(ident).parse(f"{ident}@{group}"))  # noqa: B010 (pytest internal)


def _ours(thing: object) -> bool:
    return str(getattr(thing, "__module__", "")).startswith("tests.")


def _names_used(thing: object, seen: set[int]) -> set[str]:
    """Global and attribute names used by a function of ours (a class: its methods), and
    by every function or class of ours those names lead to."""
    if id(thing) in seen:
        return set()
    seen.add(id(thing))
    if isinstance(thing, type):
        names: set[str] = set()
        for member in vars(thing).values():
            member = getattr(member, "__func__", member)  # classmethod, staticmethod
            if isinstance(member, property):
                member = member.fget
            if isinstance(member, types.FunctionType):
                names |= _names_used(member, seen)
        return names
    code = getattr(thing, "__code__", None)
    if code is None:
        return set()
    names = set(_code_names(code))
    space = getattr(thing, "__globals__", {})
    used = list(names)
    for name in used:
        target = space.get(name)
        if isinstance(target, types.ModuleType) and target.__name__.startswith("tests."):
            # `netns.lan()`: a helper reached through a module of ours, by attribute.
            for attribute in used:
                names |= _follow(getattr(target, attribute, None), seen)
        else:
            names |= _follow(target, seen)
    return names


def _follow(target: object, seen: set[int]) -> set[str]:
    """The names a callable of ours uses (through decorators such as @contextmanager)."""
    if target is None or not callable(target) or not _ours(target):
        return set()
    return _names_used(inspect.unwrap(target), seen)


def _code_names(code: types.CodeType) -> Iterable[str]:
    yield from code.co_names
    for constant in code.co_consts:  # nested functions, lambdas, comprehensions
        if isinstance(constant, types.CodeType):
            yield from _code_names(constant)


class Spawned(Exception):
    """A test of the in-process lane tried to start a process."""


class Guard:
    """Makes every way of starting a process fail, and remembers each attempt (code
    under test may swallow the exception; the test fails anyway)."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def _refuse(self, what: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            shown = next((a for a in args if not isinstance(a, subprocess.Popen)), "")
            self.attempts.append(f"{what}({str(shown)[:80]})")
            raise Spawned(f"{what} in a test of the in-process lane")

        return refuse

    @contextmanager
    def installed(self) -> Iterator[None]:
        import asyncio.base_events
        import multiprocessing.process

        import uvloop

        patches: list[tuple[Any, str]] = [
            (subprocess.Popen, "__init__"),
            (asyncio.base_events.BaseEventLoop, "subprocess_exec"),
            (asyncio.base_events.BaseEventLoop, "subprocess_shell"),
            (uvloop.Loop, "subprocess_exec"),
            (uvloop.Loop, "subprocess_shell"),
            (multiprocessing.process.BaseProcess, "start"),
            *((os, name) for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system")),
        ]
        with pytest.MonkeyPatch.context() as patch:
            for owner, name in patches:
                if hasattr(owner, name):
                    label = f"{getattr(owner, '__name__', owner)}.{name}"
                    patch.setattr(owner, name, self._refuse(label))
            yield

    def check(self, item: pytest.Item) -> None:
        if self.attempts:
            raise Spawned(
                f"{item.nodeid} is in the in-process lane but started a process: "
                f"{', '.join(self.attempts)}. Use the fixture or helper that starts it (or "
                "add its name to tests/support/lanes.py NAMES) so the test is marked."
            )


# The order `make test` hands modules to its workers: the longest kinds first, so the short
# in-process tests fill the end of the run instead of one long test starting last and
# running alone while the other workers wait (longest processing time first).
RANK = {"postfix": 3, "browser": 2, "process": 1}


def longest_first(items: list[pytest.Item]) -> None:
    """Reorder `items` in place, once they carry their lanes' marks: modules by the heaviest
    lane among their tests, a module with a long timeout mark (the contract fuzzer's) first
    within its rank; each module's tests stay together and in their order, so a module's
    shared processes start once."""
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)

    def weight(tests: list[pytest.Item]) -> tuple[int, float]:
        marked = {lane for test in tests for lane in RANK if test.get_closest_marker(lane)}
        rank = max((RANK[lane] for lane in marked), default=0)
        marks = [m for test in tests for m in test.iter_markers("timeout") if m.args]
        return rank, max((float(m.args[0]) for m in marks), default=0.0)

    ordered = sorted(modules.values(), key=weight, reverse=True)  # stable: ties keep order
    items[:] = [item for tests in ordered for item in tests]
