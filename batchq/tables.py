"""Terminal tables of batches, for ``batchq status`` (no id) and ``batchq list``.

Rows are plain dicts first, so ``--json`` prints exactly what the table shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from .models import BatchStatus

__all__ = ["batch_rows", "batches_table", "format_age", "format_duration"]


def format_duration(seconds: float | None) -> str:
    """A short human duration: ``42s``, ``7m05s``, ``3h12m``, ``2d04h``; ``-`` for unknown."""
    if seconds is None or seconds < 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_age(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds) + " ago"


def _seconds_since(iso: str | None, now_ms: int) -> float | None:
    if not iso:
        return None
    return max(0.0, now_ms / 1000 - datetime.fromisoformat(iso).timestamp())


def batch_rows(batches: Sequence[BatchStatus], now_ms: int) -> list[dict[str, Any]]:
    """Each batch's status plus ``done`` (final items) and ``age_s`` (since it was created)."""
    rows = []
    for s in batches:
        row = s.model_dump(mode="json")
        row["done"] = s.succeeded + s.failed + s.cancelled
        age = _seconds_since(s.created_at, now_ms)
        row["age_s"] = None if age is None else round(age, 3)
        rows.append(row)
    return rows


_STATE_STYLE = {"queued": "yellow", "running": "cyan", "completed": "green", "cancelled": "red"}


def batches_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("batch", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("done/total", justify="right", no_wrap=True)
    table.add_column("%", justify="right", no_wrap=True)
    table.add_column("failed", justify="right", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("age", justify="right", no_wrap=True)
    table.add_column("name", overflow="ellipsis", max_width=40)
    for r in rows:
        # Floored, so that a batch shows 100.0 only when it is done.
        pct = math.floor(1000 * r["done"] / r["total"]) / 10 if r["total"] else 100.0
        created = (r["created_at"] or "-").replace("T", " ")[:19]
        state = r["state"]
        table.add_row(
            r["batch_id"],
            f"[{_STATE_STYLE.get(state, '')}]{state}[/]",
            f"{r['done']}/{r['total']}",
            f"{pct:.1f}",
            f"[red]{r['failed']}[/]" if r["failed"] else "0",
            created,
            format_age(r["age_s"]),
            Text(r["name"] or ""),  # a name is the user's text, not markup
        )
    return table
