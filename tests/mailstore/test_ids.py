"""Message IDs: the shape the API checks, and time order."""

from __future__ import annotations

from mailstore.ids import id_floor, is_message_id, new_message_id


def test_ids_have_the_checked_shape_and_sort_by_time() -> None:
    ids = [new_message_id(1_700_000_000 + n / 1000) for n in range(0, 5000, 7)]
    assert all(is_message_id(i) for i in ids)
    assert ids == sorted(ids)
    assert len(set(new_message_id(1.0) for _ in range(1000))) == 1000  # 80 random bits


def test_foreign_text_is_not_an_id() -> None:
    for text in ("", "u" * 26, "0" * 25, "0" * 27, "01M87TZB104Q6DNGTHQKGYV1MF", "il" + "0" * 24):
        assert not is_message_id(text)


def test_a_time_floor_sorts_before_every_id_of_that_moment_and_after_earlier_ones() -> None:
    floor = id_floor(1_700_000_000.5)
    assert is_message_id(floor)
    assert all(new_message_id(1_700_000_000.5) >= floor for _ in range(100))
    assert all(new_message_id(1_700_000_000.499) < floor for _ in range(100))


def test_ids_made_in_one_millisecond_still_increase() -> None:
    # Far more than one per millisecond: arrival order must survive as id order.
    ids = [new_message_id() for _ in range(20_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(is_message_id(i) for i in ids[:100])
