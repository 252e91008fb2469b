"""The receiver's layout, stated as rules over its import graph (read from the source, so
an import under TYPE_CHECKING counts too): one folder a stage, data flowing one way.

    door      judges a connection before the banner and hands it over   (the gate process)
    smtp      the dialogue                                               (every worker)
    intake    the end of DATA to one message with its verdicts           (every worker)
    delivery  store, spool or 451, and the store's health                (every worker)
    runtime   the processes and their periodic jobs: the one wiring
    telemetry counts; never decides
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECEIVER = ROOT / "receiver"
STAGES = ("door", "smtp", "intake", "delivery", "runtime", "telemetry")
# What each stage may import of the receiver, beside itself and the shared tables at the
# top of the package (limits, replies, vocabulary, resolver).
ALLOWED = {
    "door": {"telemetry"},
    "smtp": {"door", "telemetry"},
    "intake": {"smtp", "delivery", "door", "telemetry"},
    "delivery": {"telemetry"},
    "runtime": set(STAGES),
    "telemetry": set(),
}
# Types that cross stages without their behaviour: who a client is, what it tells its host.
SHARED_TYPES = {"receiver.door.client"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, typing: bool = True) -> Iterator[str]:
    """Every module `path` imports (absolute names), wherever the import statement is;
    without `typing`, only those that run (not under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[ast.AST] = set()
    if not typing:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                skipped.update(ast.walk(node))
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from receiver.door import channel` imports the module it names.
            named = [f"{node.module}.{alias.name}" for alias in node.names]
            modules = [name for name in named if module_path(name) is not None]
            yield from modules
            if len(modules) < len(named):
                yield node.module


def module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def graph(typing: bool = True) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted(RECEIVER.rglob("*.py")):
        edges[module_name(path)] = set(imports(path, typing=typing))
    return edges


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in STAGES else None


def test_every_stage_is_a_folder_that_says_its_job() -> None:
    for name in STAGES:
        init = RECEIVER / name / "__init__.py"
        assert init.is_file(), name
        assert ast.get_docstring(ast.parse(init.read_text())), f"{name}/__init__.py says nothing"


@pytest.mark.parametrize("name", STAGES)
def test_each_stage_imports_only_what_its_place_allows(name: str) -> None:
    wrong = set()
    for module, targets in graph().items():
        if stage(module) != name:
            continue
        for target in targets:
            other = stage(target)
            if other is None or other == name or target in SHARED_TYPES:
                continue
            if other not in ALLOWED[name]:
                wrong.add(f"{module} -> {target}")
    assert not wrong, sorted(wrong)


def test_the_smtp_dialogue_imports_no_intake_delivery_or_runtime() -> None:
    # Stated apart, as the design says it: the session speaks SMTP and nothing else.
    assert ALLOWED["smtp"].isdisjoint({"intake", "delivery", "runtime"})
    assert "smtp" not in ALLOWED["door"] and not ALLOWED["telemetry"]


def test_nothing_of_the_receiver_imports_the_mongodb_driver() -> None:
    # The store is reached through protocols; the receiver uses only the store's
    # driver-free types (message, errors, ids, header scan, grammar).
    driver = {
        f"{m} -> {t}"
        for m, targets in graph().items()
        for t in targets
        if t.split(".")[0] in ("pymongo", "bson", "motor")
        or t in ("mailstore.store", "mailstore.connection", "mailstore.documents")
    }
    assert not driver, sorted(driver)


def test_the_receiver_has_no_import_cycle() -> None:
    # Annotations may name a type back (a verb function's `Session`); imports that run may not.
    runtime = graph(typing=False)
    edges = {m: {t for t in ts if t.startswith("receiver.")} for m, ts in runtime.items()}
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in done or module not in edges:
            return
        assert module not in visiting, " -> ".join([*path, module])
        visiting.add(module)
        for target in sorted(edges[module]):
            visit(target, [*path, module])
        visiting.discard(module)
        done.add(module)

    for module in sorted(edges):
        visit(module, [])


def test_modules_stay_small() -> None:
    # Style: modules of 100-400 lines; a longer one is a stage that wants splitting.
    long = {
        module_name(p): n
        for p in RECEIVER.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 450
    }
    assert not long, long


def test_every_log_line_goes_through_emit() -> None:
    # One event vocabulary: a line is `emit(event, **fields)` (or a summary line), never a
    # logger call of its own, so every line has an event name and its fields quoted.
    callers = set()
    for path in RECEIVER.rglob("*.py"):
        if path.parent.name == "telemetry":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("debug", "info", "warning", "error", "exception", "log")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in ("log", "logger", "logging")
            ):
                callers.add(f"{module_name(path)}:{node.lineno}")
    assert not callers, sorted(callers)


def test_the_vocabularies_are_closed() -> None:
    from receiver import vocabulary
    from receiver.telemetry.metrics import DoorMetrics, WorkerMetrics

    door, worker = DoorMetrics().registry, WorkerMetrics().registry
    labels = {
        (sample.name, value)
        for registry in (door, worker)
        for family in registry.collect()
        for sample in family.samples
        for value in sample.labels.values()
    }
    closes = {v for n, v in labels if n == "floodgate_sessions_closed_total"}
    assert closes == {c.value for c in vocabulary.Closed}
    refusals = {v for n, v in labels if n == "floodgate_refusals_total"}
    assert refusals == {r.value for r in vocabulary.Refused}
    outcomes = {v for n, v in labels if n == "floodgate_messages_total"}
    assert outcomes == {o.value for o in vocabulary.MessageOutcome}
