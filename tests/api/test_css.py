"""The CSS sanitiser (api/css.py) and the HTML it is used in (api/safehtml.py), in process:
what paints is kept, nothing that could fetch or run survives in any spelling, and the
cost stays linear in the input whatever the input."""

from __future__ import annotations

import re
import time

import pytest

from api import css, safehtml
from api.render import view
from tests.support import newsletter

# Every way we know for CSS to fetch (a read receipt) or run (old engines), spelled plainly,
# in capitals, with escapes, split by comments, inside @media, in a style attribute.
FETCH_OR_RUN = [
    "p{background:url(https://t.example/o.gif)}",
    "p{background:URL('https://t.example/o.gif')}",
    'p{background-image:url("https://t.example/o.gif")}',
    "p{background:#fff url(//t.example/o.gif) no-repeat}",
    "p{background:image-set('a.png' 1x, 'b.png' 2x)}",
    "p{background:-webkit-image-set(url(a.png) 1x)}",
    "p{list-style:square url(https://t.example/b.png)}",
    "p{list-style-image:url(x)}",
    "p{border-image:url(x) 30 round}",
    "p{cursor:url(x.cur),auto}",
    "p{content:url(x)}",
    "p:after{content:attr(href)}",
    "p{filter:url(#x)}",
    "p{mask:url(x.svg)}",
    "p{clip-path:url(#c)}",
    "p{background:element(#x)}",
    "p{background:cross-fade(url(a), url(b), 50%)}",
    "p{background:linear-gradient(red, blue), url(x)}",
    "p{background:paint(x)}",
    "p{color:var(--u)}:root{--u:url(x)}",
    "p{width:env(x)}",
    "@import url(https://t.example/a.css);p{color:red}",
    '@import "https://t.example/a.css";',
    "@IMPORT 'x.css';",
    "@font-face{font-family:X;src:url(https://t.example/f.woff2)}",
    "@namespace url(x);",
    "@media screen{@import url(x);p{background:url(x)}}",
    "@supports (display:grid){p{background:url(x)}}",
    "@keyframes k{from{background:url(x)}}",
    "p{color:expression(alert(1))}",
    "p{width:EXPRESSION(alert(1))}",
    "p{behavior:url(x.htc)}",
    "p{-moz-binding:url(x.xml#b)}",
    "p{background:u\\rl(x)}",
    "p{background:\\75 rl(x)}",
    "p{b\\ackground:url(x)}",
    "p{background:ur\\l(x)}",
    "@\\69mport 'x.css';",
    "p{color:exp\\ression(alert(1))}",
    "p{background:ur/**/l(x)}",
    "p{background:url/**/(x)}",
    "p{position:fixed;top:0;left:0;width:100%;height:100%}",
    "p{position:absolute}",
    "p{position:FIXED !important}",
    "p{position:sticky}",
    "p{color:red</style><script>alert(1)</script>}",
    "p{font-family:'</style><img src=x>'}",
    "p{color:red;}}</style><script>",
    "p { background : url( x ) }",
    "p{background:url(x",
    "p{background:image-set(",
]
FORBIDDEN = re.compile(
    r"url|image-set|import|font-face|expression|behavior|binding|attr\(|var\(|env\(|element"
    r"|paint|cross-fade|gradient|fixed|absolute|sticky|\\|<|namespace|keyframes|supports",
    re.IGNORECASE,
)


@pytest.mark.parametrize("sheet", FETCH_OR_RUN)
def test_nothing_that_fetches_or_runs_survives_in_a_style_element(sheet: str) -> None:
    kept = css.stylesheet(sheet)
    assert not FORBIDDEN.search(kept), kept


@pytest.mark.parametrize("sheet", FETCH_OR_RUN)
def test_nothing_that_fetches_or_runs_survives_in_a_style_attribute(sheet: str) -> None:
    declarations = sheet[sheet.find("{") + 1 :].rstrip("}")
    kept = css.declarations(declarations)
    assert not FORBIDDEN.search(kept), kept


@pytest.mark.parametrize("sheet", FETCH_OR_RUN)
def test_nothing_that_fetches_or_runs_survives_the_html_sanitiser(sheet: str) -> None:
    declarations = sheet[sheet.find("{") + 1 :].rstrip("}").replace('"', "'")
    html = f'<style>{sheet}</style><p style="{declarations}">x</p>'
    kept = safehtml.clean(html)
    styles = re.findall(r"<style>(.*?)</style>|style=\"([^\"]*)\"", kept, re.DOTALL)
    for block, attribute in styles:
        assert not FORBIDDEN.search(block + attribute), kept
    assert "<script" not in kept and "src=" not in kept, kept


def test_what_paints_is_kept() -> None:
    sheet = (
        "<!-- body{margin:0;padding:0} --> /* a comment */"
        ".btn a{color:#fff!important;background-color:#e4572e;border:1px solid rgb(1,2,3);"
        "border-radius:4px;font:bold 14px/20px 'Segoe UI',Arial,sans-serif}"
        "td.hd{background:#123456;padding:8px 16px;text-align:center;vertical-align:top}"
        "@media only screen and (max-width:600px){.wrap{width:100%!important}}"
        "table{border-collapse:collapse;width:calc(100% - 2px)}p{position:relative;top:1px}"
    )
    assert css.stylesheet(sheet) == (
        "body{margin:0;padding:0}"
        ".btn a{color:#fff!important;background-color:#e4572e;border:1px solid rgb(1,2,3);"
        "border-radius:4px;font:bold 14px/20px 'Segoe UI',Arial,sans-serif}"
        "td.hd{background:#123456;padding:8px 16px;text-align:center;vertical-align:top}"
        "@media only screen and (max-width:600px){.wrap{width:100%!important}}"
        "table{border-collapse:collapse;width:calc(100% - 2px)}p{position:relative;top:1px}"
    )


def test_a_background_with_an_image_keeps_its_colour_alone() -> None:
    kept = css.declarations("background: #e4572e url(hero.png) no-repeat; color: red")
    assert kept == "background-color:#e4572e;color:red"


def test_one_bad_declaration_or_rule_drops_only_itself() -> None:
    sheet = "a{color:red;background:url(x);margin:0}b{}c\\d{color:blue}e{color:green}"
    assert css.stylesheet(sheet) == "a{color:red;margin:0}e{color:green}"
    assert css.stylesheet("p{a{color:red}}q{color:red}") == "q{color:red}"  # nesting: dropped


def test_tables_and_fonts_keep_their_presentational_attributes() -> None:
    html = (
        '<table width="600" bgcolor="#ffcc00" border="1" cellpadding="4" cellspacing="0" '
        'align="center" background="https://t.example/bg.gif"><tr bgcolor="#eee">'
        '<td valign="top" bgcolor="#123456" style="color:#fff;background:url(x)" onclick="x">'
        '<font color="red" face="Arial" size="2">Hi</font></td></tr></table>'
    )
    assert safehtml.clean(html) == (
        '<table width="600" bgcolor="#ffcc00" border="1" cellpadding="4" cellspacing="0" '
        'align="center"><tbody><tr bgcolor="#eee">'
        '<td valign="top" bgcolor="#123456" style="color:#fff">'
        '<font color="red" face="Arial" size="2">Hi</font></td></tr></tbody></table>'
    )


def test_a_style_element_is_kept_sanitised_and_svg_style_is_not() -> None:
    html = (
        "<html><head><title>Deals</title><style>p{color:red;behavior:url(x)}</style></head>"
        '<body><p title="<style>x</style>">a</p><svg><style>p{color:blue}</style></svg></body>'
    )
    assert safehtml.clean(html) == (
        '<style>p{color:red}</style><p title="&lt;style&gt;x&lt;/style&gt;">a</p>'
    )


def test_the_newsletter_renders_with_its_styles_its_cid_logo_listed_and_no_remote_css() -> None:
    shown = view(newsletter.message("a@mx.test", "https://t.example", "https://shop.example"))
    html = shown["html_safe"]
    assert f"background-color:#{bytes(newsletter.BUTTON_BG).hex()}" in html
    assert f'bgcolor="#{bytes(newsletter.HEADER_BG).hex()}"' in html
    assert f'src="cid:{newsletter.LOGO_ID}"' in html
    assert "@import" not in html and "font-face" not in html and "hero.jpg" not in html
    assert shown["inline"] == [
        {
            "content_id": newsletter.LOGO_ID,
            "filename": "logo.png",
            "content_type": "image/png",
            "size": len(newsletter.png(newsletter.LOGO)),
        }
    ]
    assert shown["attachments"] == []  # inside multipart/alternative: not an attachment


# Inputs whose cost a quadratic reader would square: unterminated comments and strings,
# deep parentheses and braces, escapes, long runs of one token.
PATHOLOGICAL = [
    "/*",
    "'",
    '"\n',
    "a{b:(",
    "{",
    "a{",
    "}",
    "@media a{",
    "u\\",
    "1.",
    "url(",
    "a{color:red;",
    ";",
    "ab ",
    "p{width:calc(",
    "-",
]


def _cost(text: str) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        css.stylesheet(text)
        best = min(best, time.process_time() - started)
    return best


@pytest.mark.parametrize("unit", PATHOLOGICAL)
def test_the_cost_grows_linearly_with_the_input(unit: str) -> None:
    # 8 times the input costs about 8 times as much (measured: 6-11x); a quadratic reader
    # would cost 64 times as much.
    small, large = 1024, 8 * 1024
    ratio = _cost((unit * large)[:large]) / max(_cost((unit * small)[:small]), 1e-4)
    assert ratio < 24, ratio


def test_reading_stops_at_the_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = "p{color:red}" * (css.MAX_RULES + 100)
    assert css.stylesheet(rules).count("{") == css.MAX_RULES
    assert len(css.declarations("color:red;" * 2000)) < css.MAX_ATTRIBUTE
    # The budget of style attributes per message, made small so the test stays quick.
    monkeypatch.setattr(safehtml, "MAX_ATTRIBUTES_TOTAL", 40 * 1024)
    style = "color:red" + ";margin:0" * 800  # 8 KB: the most one attribute is read for
    kept = safehtml.clean(f"<p style='{style}'>x</p>" * 10).count('style="color:red;margin:0')
    assert kept == 40 * 1024 // len(style)
    sheets = safehtml.clean(f"<style>p{{color:red}}{' ' * safehtml.MAX_STYLE_TOTAL}</style>" * 3)
    assert sheets == "<style>p{color:red}</style>"  # the second and third: over the budget


def test_the_body_tags_backdrop_is_kept_as_a_rule_for_body() -> None:
    html = (
        '<html><head></head><BODY bgcolor="#f4f4f4" onload="x()" '
        "style='margin:0;background:url(https://t.example/o.gif)'><p>hi</p></body></html>"
    )
    assert safehtml.clean(html) == "<style>body{background-color:#f4f4f4;margin:0}</style><p>hi</p>"
    hostile = '<body bgcolor="x;}</style><script>" style="position:fixed;x:url(y)">z'
    assert safehtml.clean(hostile) == "<style>body{background-color:x}</style>z"
