"""Shared fixtures: a real store (embedded nx-27017, or a replica set given by
FLOODGATE_TEST_MONGODB_URI) and real receiver/API processes on free loopback ports."""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from mailstore import embedded
from mailstore.embedded import EmbeddedStore
from tests.support import lanes, processes
from tests.support.faultproxy import FaultProxy, fronting
from tests.support.processes import ServiceProcess, start_service
from tests.support.smtp import RawClient

ServiceFactory = Callable[..., ServiceProcess]
# The stores tests start pick their ports from this worker's slice too, like every other
# listener of the tests (tests.support.processes.PORTS): a store a test stopped leaves a
# port its receivers still dial, and no other worker's process may take it meanwhile.
embedded.free_port = processes.free_port
ADMIN_TOKEN = "test-admin-token-" + "x" * 16


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put each test in its lanes (tests/support/lanes.py): `make check` runs the tests in
    none of them, `make test` every test."""
    for item in items:
        for lane in sorted(lanes.lanes_of(item)):
            item.add_marker(lane)
        if lanes.module_scoped(item):
            # One xdist worker runs every test of a module whose tests share a process (a
            # module-scoped fixture), so the module starts it once (--dist loadgroup).
            group = item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))
            if config.getoption("loadgroup", False):
                lanes.name_group(item, group)
    lanes.longest_first(items)


_GUARD = pytest.StashKey[lanes.Guard]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """A test in no lane runs with every way of starting a process refused, from its
    setup to the end of its call: a start the marking missed fails the test."""
    if any(item.get_closest_marker(lane) for lane in lanes.LANES):
        return (yield)
    guard = item.stash[_GUARD] = lanes.Guard()
    with guard.installed():
        try:
            return (yield)
        finally:
            guard.check(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    guard = item.stash.get(_GUARD, None)
    if guard is None:
        return (yield)
    with guard.installed():
        try:
            return (yield)
        finally:
            guard.check(item)


@pytest.fixture(autouse=True)
def _close_raw_clients() -> Iterator[None]:
    yield
    _close_clients()


def _close_clients() -> None:
    """Close the test's raw clients: before its processes stop too, or a receiver waits
    out its drain for sessions nobody will finish."""
    while RawClient.opened:
        RawClient.opened.pop().close()


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of the store every test shares (each test gets its own database)."""
    external = os.environ.get("FLOODGATE_TEST_MONGODB_URI")
    if external:
        yield external
        return
    store = EmbeddedStore(tmp_path_factory.mktemp("store"))
    uri = store.start()
    yield uri
    store.stop()


SHARED = ("shared_receiver", "shared_api")  # processes a module's tests share


@pytest.fixture(scope="module")
def module_database() -> str:
    """The database of the processes a module's tests share."""
    return "fgtest_" + secrets.token_hex(6)


@pytest.fixture
def db_name(request: pytest.FixtureRequest) -> str:
    """A fresh database name for one test; for a test that uses a shared process, the
    module's (where that process reads and writes)."""
    if any(name in request.fixturenames for name in SHARED):
        return str(request.getfixturevalue("module_database"))
    return "fgtest_" + secrets.token_hex(6)


@pytest.fixture
def clean_store(store_uri: str, db_name: str) -> None:
    """Start each test from an empty database.

    nx-27017 ignores database names (every database sees the same collections), so a
    database per test does not isolate tests there: a ban or an auto-ban left by one test
    would refuse the next test's clients. A real replica set isolates by database name,
    except between tests that share a module's processes (and so its database).
    """
    with MongoClient(store_uri) as client:
        db = client[db_name]
        for name in db.list_collection_names():
            # Emptied, not dropped: nx-27017 change streams opened after a drop stay silent.
            db[name].delete_many({})


def external_store() -> bool:
    """True when the tests run against a real replica set (FLOODGATE_TEST_MONGODB_URI)."""
    return bool(os.environ.get("FLOODGATE_TEST_MONGODB_URI"))


async def drop_test_database(client: Any, name: str) -> None:
    """Drop a test's database on a real replica set; leave the embedded store alone.

    nx-27017 ignores database names, so dropping "a test's database" there drops shared
    collections, and with them the change-stream triggers every later stream relies on:
    streams opened afterwards stay silent. `clean_store` empties it instead.
    """
    if external_store():
        await client.drop_database(name)


@pytest.fixture
def store_env(store_uri: str, db_name: str, clean_store: None) -> dict[str, str]:
    """FLOODGATE_ settings pointing a process at this test's database."""
    return {"FLOODGATE_MONGODB_URI": store_uri, "FLOODGATE_MONGODB_DATABASE": db_name}


@pytest.fixture
def mongo(store_uri: str, clean_store: None) -> Iterator[MongoClient[dict[str, object]]]:
    """A synchronous client for checking what really reached the store."""
    client: MongoClient[dict[str, object]] = MongoClient(store_uri, tz_aware=True)
    yield client
    client.close()


def _factory(role: str, base_env: dict[str, str], workdir: Path) -> Iterator[ServiceFactory]:
    started: list[ServiceProcess] = []

    def make(host: str = "127.0.0.1", **overrides: str) -> ServiceProcess:
        env = dict(base_env)
        env.setdefault("FLOODGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        env.update({_env_name(k): str(v) for k, v in overrides.items()})
        service = start_service(role, env, workdir, host=host)
        started.append(service)
        return service

    yield make
    _close_clients()
    for service in started:
        service.stop()


def _env_name(key: str) -> str:
    return key if key.startswith("FLOODGATE_") else "FLOODGATE_" + key.upper()


@pytest.fixture
def make_receiver(store_env: dict[str, str], tmp_path: Path) -> Iterator[ServiceFactory]:
    """Start a receiver process: `make_receiver(max_connections_per_ip=3, ...)`."""
    yield from _factory("receiver", store_env, tmp_path)


@pytest.fixture
def make_api(store_env: dict[str, str], tmp_path: Path) -> Iterator[ServiceFactory]:
    """Start an API process: `make_api()`; requests need `Bearer ADMIN_TOKEN`."""
    yield from _factory("api", store_env, tmp_path)


@pytest.fixture
def receiver(make_receiver: ServiceFactory) -> ServiceProcess:
    """A receiver with default limits on this test's database."""
    return make_receiver()


@pytest.fixture
def api(make_api: ServiceFactory) -> ServiceProcess:
    return make_api()


def _shared(role: str, store_uri: str, database: str, workdir: Path) -> Iterator[ServiceProcess]:
    env = {
        "FLOODGATE_MONGODB_URI": store_uri,
        "FLOODGATE_MONGODB_DATABASE": database,
        "FLOODGATE_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    service = start_service(role, env, workdir)
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def _module_receiver(
    store_uri: str, module_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    yield from _shared("receiver", store_uri, module_database, tmp_path_factory.mktemp("mx"))


@pytest.fixture(scope="module")
def _module_api(
    store_uri: str, module_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    yield from _shared("api", store_uri, module_database, tmp_path_factory.mktemp("api"))


@pytest.fixture
def shared_receiver(_module_receiver: ServiceProcess, clean_store: None) -> ServiceProcess:
    """One receiver at default limits for every test of a module that only talks SMTP to
    it, each test from its own client address (`client_ip`) and to its own mailboxes, so
    no test's counts or rates are another's. It outlives each test's `clean_store`
    (collections are emptied, never dropped). A test that changes a limit, stops the
    receiver or reads its totals starts its own (`make_receiver`)."""
    assert _module_receiver.alive(), _module_receiver.log()[-3000:]
    return _module_receiver


@pytest.fixture
def shared_api(_module_api: ServiceProcess, clean_store: None) -> ServiceProcess:
    """One API at default limits for every test of a module that only reads through it
    (the processes a module shares use one database: `db_name` is the module's)."""
    assert _module_api.alive(), _module_api.log()[-3000:]
    return _module_api


_client_ips = itertools.count()


@pytest.fixture
def client_ip() -> str:
    """A loopback source address (127.99.0.0/16) used by no other test of this process:
    a client of its own at a shared receiver."""
    n = next(_client_ips)
    return f"127.99.{n // 250 % 256}.{n % 250 + 1}"


@pytest.fixture
def store_fault(store_uri: str) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the test store (skips on a replica set)."""
    proxy = fronting(store_uri)
    yield proxy
    proxy.stop()
