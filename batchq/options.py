"""Options a batch is submitted with, checked before anything is stored: user metadata, the
deadline and the completion hook's URL.

Metadata follows OpenAI's batch ``metadata``: string keys and values, at most 16 pairs, keys at
most 64 characters and values at most 512, so that a status line stays small however a script
uses it. A deadline is a duration from now (``90m``, ``1h30m``, ``2d``) or a moment (ISO 8601;
local time unless it names its zone); from Python also a ``timedelta`` or a ``datetime``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from batchq.errors import InputError

__all__ = [
    "MAX_META_KEY",
    "MAX_META_PAIRS",
    "MAX_META_VALUE",
    "Deadline",
    "check_metadata",
    "check_notify_url",
    "parse_deadline",
    "parse_meta_pairs",
    "resolve_deadline",
]

MAX_META_PAIRS = 16
MAX_META_KEY = 64
MAX_META_VALUE = 512

# What the Python API takes for a deadline: the command line's text, or its Python values.
Deadline = str | datetime | timedelta


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
    if not isinstance(metadata, Mapping):
        raise _bad(f"a mapping of strings to strings, not {type(metadata).__name__}")
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


_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_deadline(text: str, *, now_ms: int) -> int:
    """``--deadline``: a duration from ``now_ms`` or an ISO 8601 moment, as epoch ms."""
    value = text.strip()
    if re.fullmatch(f"(?:{_DURATION.pattern})+", value):
        seconds = sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION.findall(value))
        if seconds <= 0:
            raise InputError(f"{text!r:.80} is not after now", field="deadline")
        return now_ms + int(seconds * 1000)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{text!r:.80} is neither a duration (30m, 1h30m, 2d) nor an ISO 8601 time "
            "(2025-06-01T08:00, 2025-06-01T08:00:00+02:00)",
            field="deadline",
        ) from None
    return _moment_ms(moment, now_ms, text)


def _moment_ms(moment: datetime, now_ms: int, shown: str) -> int:
    # A time without a zone is the user's local time, as a clock on the wall shows it.
    ms = int(moment.astimezone().timestamp() * 1000)
    if ms <= now_ms:
        raise InputError(f"{shown!r:.80} is in the past", field="deadline")
    return ms


def resolve_deadline(value: Deadline, *, now_ms: int) -> int:
    """A deadline as the Python API takes it (text as ``--deadline``, a ``timedelta`` from now
    or a ``datetime``, local time if naive), as epoch ms; checked as the command checks it."""
    if isinstance(value, str):
        return parse_deadline(value, now_ms=now_ms)
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise InputError(f"{value!s:.80} is not after now", field="deadline")
        return now_ms + int(value.total_seconds() * 1000)
    if isinstance(value, datetime):
        return _moment_ms(value, now_ms, value.isoformat())
    raise InputError(
        f"a duration or time (str, timedelta or datetime), not {type(value).__name__}",
        field="deadline",
    )


def check_notify_url(url: str) -> str:
    """``--notify``: an http(s) URL that the final status is POSTed to."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        ok = False
    if not ok or len(url) > 2048 or any(c.isspace() for c in url):
        raise InputError(f"{url!r:.80} is not an http:// or https:// URL", field="notify")
    return url
