"""Kept render answers: bounded in bytes, least recently used out first, forgotten with
their message (in process)."""

from __future__ import annotations

from api.rendercache import SLOT, RenderCache, size_of


def test_answers_are_kept_within_the_byte_bound_least_recently_used_out_first() -> None:
    cache = RenderCache(size=8 * 1_000)
    for n in range(20):
        cache.put(f"m{n}/view", {"n": n}, 900)
    assert cache.bytes <= cache.size
    assert cache.get("m0/view") is None  # the oldest went first
    assert cache.get("m19/view") == {"n": 19}
    assert len(cache) == cache.size // (900 + SLOT)


def test_an_answer_larger_than_an_eighth_of_the_cache_is_not_kept() -> None:
    cache = RenderCache(size=8_000)
    cache.put("m/attachment/0", b"x", 2_000)
    assert cache.get("m/attachment/0") is None and cache.bytes == 0


def test_a_deleted_message_takes_its_answers_with_it() -> None:
    cache = RenderCache(size=1_000_000)
    for job in ("view", "links", "attachment/3"):
        cache.put(f"gone/{job}", job, 10)
    cache.put("kept/view", "view", 10)
    cache.forget("gone")
    assert [cache.get(f"gone/{job}") for job in ("view", "links", "attachment/3")] == [None] * 3
    assert cache.get("kept/view") == "view" and len(cache) == 1


def test_evicted_answers_leave_no_trace_in_the_index() -> None:
    cache = RenderCache(size=8 * 200)
    for n in range(1_000):
        cache.put(f"m{n}/view", n, 100)
    assert len(cache._by_message) == len(cache)  # bounded with the cache


def test_the_size_of_an_answer_counts_its_strings() -> None:
    assert size_of({"text": "x" * 1_000}) >= 1_000
    assert size_of(["a", 1, None]) == 4 * SLOT + 1
