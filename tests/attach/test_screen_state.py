"""Reading pi's mode changes from its output, and what the exit resets contain."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pibridge.attach.screen_state import ScreenState

PI_TUI = Path(__file__).resolve().parents[2] / "node_modules/@mariozechner/pi-tui/dist/terminal.js"

PI_START = b"\x1b[?2004h\x1b[>7u\x1b]0;pi - repo\x07\x1b[?25l\x1b[?2026h drawing \x1b[?2026l"


def test_pi_start_up_modes_are_tracked_and_reset() -> None:
    screen = ScreenState()
    screen.feed(PI_START)
    assert screen.at_boundary
    assert screen.kitty_keyboard_depth == 1
    assert screen.title == "pi - repo"
    reset = screen.reset_sequence()
    for sequence in (b"\x1b[?2004l", b"\x1b[?25h", b"\x1b[?2026l", b"\x1b[<1u"):
        assert sequence in reset


def test_pi_clean_exit_leaves_no_kitty_pop() -> None:
    screen = ScreenState()
    screen.feed(PI_START + b"\x1b[?2004l\x1b[<u\x1b[?25h")
    assert screen.kitty_keyboard_depth == 0
    assert b"<" not in screen.reset_sequence()


def test_modify_other_keys_and_progress_and_mouse_and_alt_screen() -> None:
    screen = ScreenState()
    screen.feed(b"\x1b[>4;2m\x1b]9;4;3\x07\x1b[?1049h\x1b[?1000;1006h")
    reset = screen.reset_sequence()
    for sequence in (
        b"\x1b[>4;0m",
        b"\x1b]9;4;0;\x07",
        b"\x1b[?1049l",
        b"\x1b[?1000l",
        b"\x1b[?1006l",
    ):
        assert sequence in reset


@pytest.mark.parametrize(
    ("partial", "expected"),
    [
        (b"\x1b", b"\x18"),
        (b"\x1b[3", b"\x18"),
        (b"\x1b]0;ti", b"\x1b\\"),
        (b"\x1bP+q", b"\x1b\\"),
        (b"\xe6\x97", b"\x18"),
        (b"plain", b""),
    ],
)
def test_unfinished_sequences_are_ended_before_resets(partial: bytes, expected: bytes) -> None:
    screen = ScreenState()
    screen.feed(partial)
    assert screen.at_boundary == (expected == b"")
    assert screen.interrupt_sequence() == expected
    assert screen.reset_sequence().startswith(expected)


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_state_does_not_depend_on_how_output_was_split(chunks: list[bytes]) -> None:
    whole, split = ScreenState(), ScreenState()
    whole.feed(b"".join(chunks))
    for chunk in chunks:
        split.feed(chunk)
    assert whole.reset_sequence() == split.reset_sequence()
    assert whole.at_boundary == split.at_boundary
    assert whole.title == split.title


def test_every_mode_pi_tui_enables_is_undone() -> None:
    source = PI_TUI.read_text()
    for enabled, undone in (
        ("\\x1b[?2004h", b"\x1b[?2004l"),
        ("\\x1b[>7u", b"\x1b[<1u"),
        ("\\x1b[>4;2m", b"\x1b[>4;0m"),
        ("\\x1b[?25l", b"\x1b[?25h"),
    ):
        assert enabled in source
        screen = ScreenState()
        screen.feed(enabled.encode().decode("unicode_escape").encode())
        assert undone in screen.reset_sequence()


SEQUENCE_SAMPLES = [
    b"\x1b[?2004h",
    b"\x1b[?25l",
    b"\x1b[>7u",
    b"\x1b[<u",
    b"\x1b]0;title\x07",
    b"\x1b[?2026h",
    "é€😀".encode(),
    "😀".encode()[:2],
    b"\x80\x80\x80\x80\x80",
    b"\x1b",
]


@given(st.lists(st.binary(max_size=64) | st.sampled_from(SEQUENCE_SAMPLES), max_size=40))
def test_feeding_runs_at_once_matches_stepping_byte_by_byte(pieces: list[bytes]) -> None:
    """The fast path over plain text leaves exactly the state byte-by-byte stepping would."""
    fast, slow = ScreenState(), ScreenState()
    for piece in pieces:
        fast.feed(piece)
        for byte in piece:
            slow._step(byte)
        assert fast.at_boundary == slow.at_boundary
        assert fast.reset_sequence() == slow.reset_sequence()
        assert fast.title == slow.title
