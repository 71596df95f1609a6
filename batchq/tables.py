"""Terminal tables: batches (``batchq status`` without an id, ``batchq list``) and live workers
(``batchq top``, ``batchq status --watch``).

Rows are plain dicts first, so ``--json`` prints exactly what the table shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, assert_never

from rich import box
from rich.table import Table
from rich.text import Text

from .models import BatchState, BatchStatus
from .presence import WorkerInfo

__all__ = ["batch_rows", "batches_table", "format_age", "format_duration", "workers_table"]


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
        row["done"] = s.done
        age = _seconds_since(s.created_at, now_ms)
        row["age_s"] = None if age is None else round(age, 3)
        rows.append(row)
    return rows


def _state_style(state: BatchState) -> str:
    # A match that mypy proves exhaustive: a new state cannot ship without a style.
    match state:
        case BatchState.QUEUED:
            return "yellow"
        case BatchState.RUNNING:
            return "cyan"
        case BatchState.PAUSED:
            return "blue"
        case BatchState.COMPLETED:
            return "green"
        case BatchState.CANCELLED:
            return "red"
        case BatchState.EXPIRED:
            return "magenta"
        case _:
            assert_never(state)


def _count(n: int) -> Text:
    return Text(str(n), style="red" if n else "")


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
    with_meta = any(r.get("metadata") for r in rows)
    if with_meta:
        table.add_column("meta", overflow="fold")
    for r in rows:
        # Floored, so that a batch shows 100.0 only when it is done.
        pct = math.floor(1000 * r["done"] / r["total"]) / 10 if r["total"] else 100.0
        created = (r["created_at"] or "-").replace("T", " ")[:19]
        state = BatchState(r["state"])
        # Cells are Text, never markup: names and metadata are the user's text.
        table.add_row(
            Text(r["batch_id"]),
            Text(state.value, style=_state_style(state)),
            f"{r['done']}/{r['total']}",
            f"{pct:.1f}",
            _count(r["failed"]),
            created,
            format_age(r["age_s"]),
            Text(r["name"] or ""),
            *(
                [Text(" ".join(f"{k}={v}" for k, v in (r.get("metadata") or {}).items()))]
                if with_meta
                else []
            ),
        )
    return table


def workers_table(
    workers: Sequence[WorkerInfo],
    now_ms: int,
    *,
    rates: Mapping[str, float | None] | None = None,
    batch_id: str | None = None,
) -> Table | Text:
    """A row per worker. ``rates``: items/s by worker id, when the caller samples them;
    ``batch_id``: the watched batch, whose items in flight get their own column (otherwise
    each row lists the batches the worker is running)."""
    if not workers:
        return Text("no live workers", style="yellow")
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    t.add_column("worker", no_wrap=True)
    t.add_column("ollama", overflow="ellipsis", max_width=40)
    if batch_id:
        t.add_column("this batch", justify="right")
    t.add_column("in flight", justify="right")
    if rates is not None:
        t.add_column("items/s", justify="right")
    if not batch_id:
        t.add_column("done", justify="right")
        t.add_column("failed", justify="right")
        t.add_column("retried", justify="right")
        t.add_column("running batches", overflow="ellipsis", max_width=44)
        t.add_column("up", justify="right")
    t.add_column("last error", overflow="ellipsis", no_wrap=True, max_width=50)
    for w in workers:
        row: list[str | Text] = [
            f"{w.host}:{w.pid}" if w.host else w.worker_id,
            ", ".join(w.endpoints),
        ]
        if batch_id:
            row.append(str(w.running.get(batch_id, 0)))
        row.append(f"{w.in_flight}/{w.concurrency}")
        if rates is not None:
            rate = rates.get(w.worker_id)
            row.append("-" if rate is None else f"{rate:.1f}")
        if not batch_id:
            row += [
                str(w.done),
                f"[red]{w.failed}[/]" if w.failed else "0",
                str(w.retried),
                " ".join(f"{b}:{n}" for b, n in sorted(w.running.items())),
                format_duration((now_ms - w.started_at) / 1000 if w.started_at else None),
            ]
        err = ""
        if w.last_error:
            err = f"{format_age((now_ms - w.last_error_at) / 1000)}: {w.last_error}"
        row.append(Text(err))
        t.add_row(*row)
    return t
