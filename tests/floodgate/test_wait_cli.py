"""`floodgate wait`: what it prints of an answer (the real calls: tests/api/test_wait.py)."""

from __future__ import annotations

import argparse

import pytest

from floodgate.cli import build_parser
from floodgate.wait_cli import pick

LINK = {"url": "https://shop.example/confirm", "text": None, "source": "text"}
CODE = {"code": "482913", "context": "Your code is 482913."}


def test_a_code_is_preferred_to_a_link_and_a_link_is_the_fallback() -> None:
    assert pick({"links": [LINK], "codes": [CODE]}) == ("code", "482913")
    assert pick({"links": [LINK], "codes": []}) == ("link", "https://shop.example/confirm")
    assert pick({"links": [], "codes": []}) is None


def test_a_timeout_past_the_apis_bound_is_refused_before_any_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["wait", "box@mx.test", "--timeout", "61"])
    assert exit_.value.code == 2
    assert "must be from 0 to 60 seconds" in capsys.readouterr().err
    args = parser.parse_args(["wait", "box@mx.test", "--from", "shop", "--has", "code"])
    assert isinstance(args, argparse.Namespace)
    assert (args.sender, args.has, args.timeout) == ("shop", "code", 30.0)
