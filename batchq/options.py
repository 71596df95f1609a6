"""Options a batch is submitted with, checked before anything is stored: user metadata.

Metadata follows OpenAI's batch ``metadata``: string keys and values, at most 16 pairs, keys at
most 64 characters and values at most 512, so that a status line stays small however a script
uses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .errors import InputError

__all__ = [
    "MAX_META_KEY",
    "MAX_META_PAIRS",
    "MAX_META_VALUE",
    "check_metadata",
    "parse_meta_pairs",
]

MAX_META_PAIRS = 16
MAX_META_KEY = 64
MAX_META_VALUE = 512


def _bad(message: str) -> InputError:
    return InputError(message, field="metadata")


def parse_meta_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (the repeatable ``--meta`` option) as checked metadata."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise _bad(f"{pair!r:.80} is not KEY=VALUE")
        if key in out:
            raise _bad(f"key {key!r:.80} is given twice")
        out[key] = value
    return check_metadata(out)


def check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_META_PAIRS:
        raise _bad(f"at most {MAX_META_PAIRS} pairs, got {len(metadata)}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise _bad(f"keys and values must be strings, got {key!r:.80}: {value!r:.80}")
        if not key:
            raise _bad("a key is empty")
        if len(key) > MAX_META_KEY:
            raise _bad(f"key {key!r:.80} is longer than {MAX_META_KEY} characters ({len(key)})")
        if len(value) > MAX_META_VALUE:
            raise _bad(
                f"value of {key!r:.80} is longer than {MAX_META_VALUE} characters ({len(value)})"
            )
    return dict(metadata)
