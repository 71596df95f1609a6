"""Options a batch is submitted with, checked before anything is stored: its name, user
metadata, the deadline, the completion hook's URL, and its place in the dispatch (priority and
weight, see :mod:`batchq.store.stride`). :class:`SubmitOptions` carries them, checked, from the
command line or the Python API down to the store.

Metadata follows OpenAI's batch ``metadata``: string keys and values, at most 16 pairs, keys at
most 64 characters and values at most 512, so that a status line stays small however a script
uses it. A deadline is a duration from now (``90m``, ``1h30m``, ``2d``) or a moment (ISO 8601;
local time unless it names its zone); from Python also a ``timedelta`` or a ``datetime``. It
is at most :data:`MAX_DEADLINE` (ten years) from now: a batch meant to run by then has no use
for a later one, and an unbounded one (``99999999999999999999d``) would be a time that no
date can show.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypedDict
from urllib.parse import urlsplit

from batchq import clock
from batchq.errors import InputError
from batchq.redact import redact_url
from batchq.targets import host_refusal

__all__ = [
    "DEFAULT_PRIORITY",
    "DEFAULT_WEIGHT",
    "MAX_DEADLINE",
    "MAX_META_KEY",
    "MAX_META_PAIRS",
    "MAX_META_VALUE",
    "MAX_PRIORITY",
    "MAX_WEIGHT",
    "MIN_WEIGHT",
    "Deadline",
    "SubmitArgs",
    "SubmitOptions",
    "check_metadata",
    "check_notify_url",
    "check_priority",
    "check_weight",
    "parse_deadline",
    "parse_meta_pairs",
    "resolve_deadline",
]

MAX_META_PAIRS = 16
MAX_META_KEY = 64
MAX_META_VALUE = 512

# What the Python API takes for a deadline: the command line's text, or its Python values.
Deadline = str | datetime | timedelta
MAX_DEADLINE = timedelta(days=3650)
_MAX_DEADLINE_MS = MAX_DEADLINE // timedelta(milliseconds=1)

DEFAULT_PRIORITY = 0
DEFAULT_WEIGHT = 1.0
# Bounds that keep a level's name short and a stride far from float trouble (a weight of 1e-3
# advances a pass by 1,000 per item: a million items still leave 2^53 untouched).
MAX_PRIORITY = 1000
MIN_WEIGHT = 0.001
MAX_WEIGHT = 1000.0


def check_priority(value: object) -> int:
    """``--priority``: an integer in [-MAX_PRIORITY, MAX_PRIORITY]; higher goes first."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"an integer, not {value!r:.80}", field="priority")
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        raise InputError(
            f"must be between {-MAX_PRIORITY} and {MAX_PRIORITY}, got {value}", field="priority"
        )
    return value


def check_weight(value: object) -> float:
    """``--weight``: a positive number; a batch's share of its priority level is proportional
    to it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"a positive number, not {value!r:.80}", field="weight")
    w = float(value)
    if not math.isfinite(w) or not MIN_WEIGHT <= w <= MAX_WEIGHT:
        raise InputError(
            f"must be a number between {MIN_WEIGHT:g} and {MAX_WEIGHT:g}, got {value!r:.80}",
            field="weight",
        )
    return w


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
        return _bounded(seconds * 1000, now_ms, text)
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
    try:
        ms = moment.astimezone().timestamp() * 1000
    except (OverflowError, ValueError):  # 9999-12-31T23:59-14:00 is in the year 10000
        ms = math.inf if moment.year > 1970 else -math.inf
    if ms <= now_ms:
        raise InputError(f"{shown!r:.80} is in the past", field="deadline")
    return _bounded(ms - now_ms, now_ms, shown)


def _bounded(after_ms: float, now_ms: int, shown: str) -> int:
    # Compared as a float first: a duration of 1e400 seconds is inf, which int() refuses.
    if not after_ms <= _MAX_DEADLINE_MS:
        raise InputError(
            f"{shown!r:.80} is more than {MAX_DEADLINE.days // 365} years from now",
            field="deadline",
        )
    return now_ms + int(after_ms)


def resolve_deadline(value: Deadline, *, now_ms: int) -> int:
    """A deadline as the Python API takes it (text as ``--deadline``, a ``timedelta`` from now
    or a ``datetime``, local time if naive), as epoch ms; checked as the command checks it."""
    if isinstance(value, str):
        return parse_deadline(value, now_ms=now_ms)
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise InputError(f"{value!s:.80} is not after now", field="deadline")
        return _bounded(value / timedelta(milliseconds=1), now_ms, str(value))
    if isinstance(value, datetime):
        return _moment_ms(value, now_ms, value.isoformat())
    raise InputError(
        f"a duration or time (str, timedelta or datetime), not {type(value).__name__}",
        field="deadline",
    )


def check_notify_url(url: str, *, allow_private: bool = True) -> str:
    """``--notify``: an http(s) URL that the final status is POSTed to, to an address that
    :mod:`batchq.targets` allows as far as the URL alone tells (the worker checks again, on
    the addresses its name resolves to). Shown redacted: it may carry a token."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        ok = False
    if not ok or len(url) > 2048 or any(c.isspace() for c in url):
        raise InputError(
            f"{redact_url(url)!r:.80} is not an http:// or https:// URL", field="notify"
        )
    refusal = host_refusal(url, allow_private=allow_private)
    if refusal is not None:
        raise InputError(f"{redact_url(url)!r:.80} is refused: {refusal}", field="notify")
    return url


class SubmitArgs(TypedDict, total=False):
    """:class:`SubmitOptions` as the keywords ``submit`` takes (the same names and types)."""

    name: str | None
    metadata: Mapping[str, str] | None
    deadline: Deadline | None
    notify: str | None
    priority: int
    weight: float


@dataclass(frozen=True)
class SubmitOptions:
    """How a batch is submitted, checked when made: a bad option fails before any item is read,
    with :class:`InputError` naming the field. ``name`` labels the batch; ``metadata``
    (``--meta``), ``deadline`` (``--deadline``, resolved here, from now, to
    :attr:`deadline_ms`), ``notify`` (``--notify``), ``priority`` and ``weight`` are the
    command's options of those names."""

    name: str | None = None
    metadata: Mapping[str, str] | None = None
    deadline: Deadline | None = None
    notify: str | None = None
    priority: int = DEFAULT_PRIORITY
    weight: float = DEFAULT_WEIGHT
    deadline_ms: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # Frozen, so the checked (normalised) values replace the given ones this way.
        check_priority(self.priority)
        object.__setattr__(self, "weight", check_weight(self.weight))
        if self.metadata is not None:
            object.__setattr__(self, "metadata", check_metadata(self.metadata))
        if self.notify is not None:
            check_notify_url(self.notify)
        if self.deadline is not None:
            ms = resolve_deadline(self.deadline, now_ms=clock.now_ms())
            object.__setattr__(self, "deadline_ms", ms)

    def check_target(self, *, allow_private: bool) -> None:
        """The check of ``notify`` that depends on a setting (``notify_allow_private``): link-
        local targets were refused when these options were made, private ones only here."""
        if self.notify is not None and not allow_private:
            check_notify_url(self.notify, allow_private=False)

    def named(self, name: str) -> SubmitOptions:
        """These options under ``name``. A copy, not :func:`dataclasses.replace`, which would
        check everything again and resolve a relative deadline from a later now."""
        named = copy.copy(self)
        object.__setattr__(named, "name", name)
        return named
