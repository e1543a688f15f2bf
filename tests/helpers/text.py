"""Text edits in tests that fail loudly when their premise does not hold."""

from __future__ import annotations


def replace_once(text: str, old: str, new: str) -> str:
    """`text` with `old` replaced by `new`; `old` must occur exactly once, so a
    test never goes on with an edit that silently did nothing."""
    count = text.count(old)
    assert count == 1, f"{old!r} occurs {count} times in the text, expected once"
    return text.replace(old, new)
