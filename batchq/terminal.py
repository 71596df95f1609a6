"""Text from elsewhere made safe to print on a terminal.

Batch names, metadata, custom ids, error messages and Ollama's replies are anybody's text: an
ESC or CSI in one could retitle the window, clear the screen, hide lines or (on some
terminals) answer back as typed input. Every human output passes them through
:func:`printable`; ``--json`` needs nothing (JSON escapes control characters itself).
"""

from __future__ import annotations

import logging

__all__ = ["EscapingFormatter", "printable"]

# C0, DEL and C1 (0x9b is a one-byte CSI), plus the bidirectional overrides and isolates that
# reorder what follows them ("Trojan Source") and the separators that break a line.
_UNSAFE = [
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x200E,
    0x200F,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    0x2028,
    0x2029,
]
_ESCAPES = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _UNSAFE}


def printable(text: str) -> str:
    """``text`` with every control character written as a visible escape (``\\x1b``,
    ``\\n``'s ``\\x0a``, ``\\u202e``); a backslash stays as it is."""
    return text.translate(_ESCAPES)


class EscapingFormatter(logging.Formatter):
    """Log lines with :func:`printable` text (a worker logs Ollama's error messages to its
    terminal), keeping the line breaks of a multi-line record such as a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(printable(line) for line in super().format(record).split("\n"))
