"""Every parser a sender's bytes reach grows linearly with them: each crafted case that once
cost the API seconds, in process, at two sizes ten times apart. A ratio between the two
(best of three each, so a busy host's one slow run does not decide) stays far below the
hundredfold a quadratic cost gives; no single run is held to a wall-clock threshold. Each
cost is this thread's CPU time: on a loaded host the wall clock also counts the time the
thread waited for a core (a 31-fold wall-clock ratio for a 10-fold linear cost, once)."""

from __future__ import annotations

import time
from collections.abc import Callable

from api import links, render
from api.render import MAX_PARAMETERS, first_parameters
from bench.hostile import dashes, semicolons

# A linear cost scaled 10 times costs ~10 times more (fixed costs: less); quadratic ~100.
GENEROUS = 30


def cost(work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.thread_time()
        work()
        best = min(best, time.thread_time() - started)
    return best


def ratio(small: Callable[[], object], large: Callable[[], object]) -> float:
    return cost(large) / max(cost(small), 1e-6)


def test_the_links_code_pattern_is_linear_in_a_run_of_dashed_capitals() -> None:
    # 32 KB of "A-A-..." took 3.5 s while the lookahead before a code was unbounded.
    small, large = dashes(8_000), dashes(80_000)
    assert (
        ratio(
            lambda: links.extract("", small.decode(), None),
            lambda: links.extract("", large.decode(), None),
        )
        < GENEROUS
    )


def test_the_links_code_pattern_is_linear_in_a_run_of_capitals() -> None:
    small, large = "code " + "A" * 100_000, "code " + "A" * 1_000_000
    assert (
        ratio(lambda: links.extract("", small, None), lambda: links.extract("", large, None))
        < GENEROUS
    )


def test_anchor_text_of_many_linked_images_is_kept_in_linear_time() -> None:
    # 100,000 images in one link met the deadline: the text so far was summed at each node.
    def html(count: int) -> str:
        return "<a href='https://example.org/'>" + "<img alt='go'>x" * count + "</a>"

    small, large = html(1_000), html(10_000)
    assert (
        ratio(lambda: links.extract("", None, small), lambda: links.extract("", None, large))
        < GENEROUS
    )
    found = links.extract("", None, small)["links"]
    assert [link["url"] for link in found] == ["https://example.org/"]
    assert len(found[0]["text"]) == links.MAX_LINK_TEXT


def test_a_content_type_is_read_up_to_its_sixty_fourth_parameter() -> None:
    value = "text/plain; charset=utf-8" + ";a" * 10_000
    assert first_parameters(value).count(";") == MAX_PARAMETERS
    assert first_parameters("text/plain; charset=utf-8") == "text/plain; charset=utf-8"
    # What the MIME parser is given of each part's Content-Type: 64 parameters at most.
    _, text, _ = render.bodies(semicolons(parts=2, count=10_000))
    assert text == "x"


def test_parts_with_thousands_of_semicolons_cost_no_more_than_the_first_sixty_four() -> None:
    # 29 parts of 1,000 semicolons: 0.5 s a view while every parameter was parsed.
    small, large = semicolons(29, 1_000), semicolons(29, 10_000)
    assert ratio(lambda: render.view(small), lambda: render.view(large)) < GENEROUS
    view = render.view(large)
    assert view["parse_error"] is None and view["text"] == "x"
