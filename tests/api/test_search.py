"""Search within a mailbox: the query grammar, its bounds, and the tests on listing fields,
in process (the route, against real processes: tests/api/test_messages.py)."""

from __future__ import annotations

import pytest

from api.search import MAX_QUERY, MAX_TERMS, Field, Invalid, Term, parse

LISTED = {"subject": "Confirm your account", "from": "Shop <noreply@shop.example>", "to": "me"}


def test_field_terms_quoted_values_and_free_words() -> None:
    search = parse('from:shop SUBJECT:"your account" welcome "two words" https://x.example/')
    assert search.terms == (
        Term(Field.FROM, "shop"),
        Term(Field.SUBJECT, "your account"),
        Term(Field.ANY, "welcome"),
        Term(Field.ANY, "two words"),
        Term(Field.ANY, "https://x.example/"),  # not a field: a URL is one word
    )


def test_field_terms_decide_on_the_listing_and_free_words_fall_to_the_text() -> None:
    assert parse('from:SHOP subject:"confirm your"').headers_match(LISTED)
    assert not parse("from:bank").headers_match(LISTED)
    assert not parse("to:other").headers_match(LISTED)
    search = parse("account noreply 482913")
    assert search.headers_match(LISTED)  # free words are not decided here
    assert search.words_left(LISTED) == ["482913"]  # the text must hold it


@pytest.mark.parametrize(
    ("q", "reason"),
    [
        ('subject:"open', "is not closed"),
        ("from: shop", "from: needs a value"),
        ("   ", "no term"),
        (" ".join(["w"] * (MAX_TERMS + 1)), f"at most {MAX_TERMS} terms"),
        ("x" * (MAX_QUERY + 1), f"at most {MAX_QUERY} characters"),
    ],
)
def test_a_query_outside_the_grammar_or_its_bounds_is_refused_saying_why(
    q: str, reason: str
) -> None:
    with pytest.raises(Invalid, match=reason):
        parse(q)
