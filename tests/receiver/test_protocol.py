"""Guards for the parts of aiosmtpd the session re-implements for speed."""

import asyncio
from pathlib import Path

from aiosmtpd.smtp import SMTP

from receiver.limits import DEFAULTS
from receiver.protocol import FloodgateSMTP, _with_enhanced
from receiver.server import ReceiverConfig, ReceiverState


class NullStore:
    pending = 0

    async def insert(self, message: object) -> None:
        return None

    async def ping(self, within: float = 2.0) -> bool:
        return True


class NullBlocklist:
    def is_blocked(self, ip: str) -> bool:
        return False

    def staleness(self) -> float:
        return 0.0

    def entries(self) -> int:
        return 0

    def ban(self, key: str, reason: str, ttl: float) -> None:
        return None


async def test_fast_init_sets_every_attribute_aiosmtpd_sets() -> None:
    loop = asyncio.get_running_loop()
    config = ReceiverConfig("mx.test", frozenset({"mx.test"}), DEFAULTS, data_dir=Path("."))
    state = ReceiverState(config, NullStore(), NullBlocklist(), loop)
    ours = FloodgateSMTP(state, "192.0.2.1", "192.0.2.1")
    theirs = SMTP(state.handler, hostname="mx.test", loop=loop)
    missing = {name for name in vars(theirs) if not hasattr(ours, name)}
    assert not missing, f"aiosmtpd sets attributes our session does not: {missing}"
    assert set(ours._smtp_methods) == set(theirs._smtp_methods) | {"PROXY"}  # ours refuses it
    assert set(ours._handle_hooks) == set(theirs._handle_hooks)
    assert ours._getaddr("<Ann.Lee+tag@Example.org> SIZE=10") == (
        "Ann.Lee+tag@Example.org",
        "SIZE=10",
    )
    assert ours._getaddr("<>") == theirs._getaddr("<>")
    assert ours._getaddr('<"odd local"@example.org>') == theirs._getaddr(
        '<"odd local"@example.org>'
    )


def test_enhanced_codes_are_added_only_where_missing() -> None:
    assert (
        _with_enhanced("503 Error: need MAIL command", "503")
        == "503 5.5.1 Error: need MAIL command"
    )
    assert _with_enhanced("250 2.1.0 Ok", "250") == "250 2.1.0 Ok"
    assert _with_enhanced("354 End data", "354") == "354 End data"
