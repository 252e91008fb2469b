"""What a sender cannot make a reader see wrong (api.display): bidi controls escaped,
hosts mixing scripts in punycode, userinfo set apart, file names cut by UTF-8 bytes."""

from __future__ import annotations

from api.display import (
    MAX_FILENAME_BYTES,
    ascii_filename,
    escape_bidi,
    filename,
    host_display,
    mixed_script,
    url_view,
)

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "invoice" RLO "fdp.exe" displays as "invoiceexe.pdf"
CYRILLIC_A = "\u0430"


def test_a_right_to_left_override_in_a_file_name_is_shown_escaped() -> None:
    assert filename(f"invoice{RLO}fdp.exe") == "invoice[U+202E]fdp.exe"
    controls = "\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069\u200e\u200f"
    assert (
        escape_bidi(f"a{controls}b") == "a" + "".join(f"[U+{ord(c):04X}]" for c in controls) + "b"
    )
    assert escape_bidi("plain café") == "plain café"


def test_bidi_controls_in_a_url_are_percent_encoded_in_its_display() -> None:
    shown = url_view(f"https://files.example/report{RLO}fdp.exe")
    assert shown["display"] == "https://files.example/report%E2%80%AEfdp.exe"
    assert shown["host"] == "files.example"


def test_a_host_mixing_scripts_is_shown_as_its_a_label() -> None:
    host = f"p{CYRILLIC_A}ypal.com"
    assert mixed_script(f"p{CYRILLIC_A}ypal")
    shown = url_view(f"https://{host}/login")
    assert shown["host"] == "xn--pypal-4ve.com"
    assert shown["display"] == "https://xn--pypal-4ve.com/login"
    assert url_view(f"mailto:ceo@b{CYRILLIC_A}nk.test")["display"] == "mailto:ceo@xn--bnk-6cd.test"


def test_single_script_and_cjk_with_kana_hosts_are_shown_as_written() -> None:
    assert host_display("bücher.example") == "bücher.example"
    assert host_display("пример.рф") == "пример.рф"
    assert host_display("日本ご.jp") == "日本ご.jp"  # Han with Hiragana: one writing system
    assert not mixed_script("example-42")


def test_userinfo_is_set_apart_from_the_host_it_poses_as() -> None:
    shown = url_view("https://paypal.com@evil.test/signin")
    assert (shown["userinfo"], shown["host"]) == ("paypal.com", "evil.test")
    assert url_view("https://example.com/a@b")["userinfo"] is None


def test_cjk_and_emoji_file_names_are_cut_by_utf8_bytes_with_their_extension() -> None:
    cjk = filename("請求書" * 40 + ".pdf")  # 360 bytes of UTF-8 before the extension
    assert cjk == "請求書" * 21 + "請求.pdf"  # 195 + 4 bytes: never half a character
    assert len(cjk.encode("utf-8")) <= MAX_FILENAME_BYTES
    emoji = filename("\U0001f600" * 100)  # 4 bytes each, no extension
    assert emoji == "\U0001f600" * (MAX_FILENAME_BYTES // 4)
    # A joiner or combining mark is not left dangling at the cut.
    joined = filename("\U0001f468\u200d" * 60)
    assert not joined.endswith("\u200d") and len(joined.encode()) <= MAX_FILENAME_BYTES
    assert filename("short.pdf") == "short.pdf"


def test_the_ascii_fallback_name_has_no_quote_backslash_or_non_ascii() -> None:
    assert ascii_filename('請求"\\.pdf') == "____.pdf"
