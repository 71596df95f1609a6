"""Terminal tables: batches (``batchq status`` without an id, ``batchq list``), live workers
(``batchq top``, ``batchq status --watch``) and Ollama hosts (``batchq top``, ``batchq status``).

Rows are plain dicts first, so ``--json`` prints exactly what the table shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, assert_never

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from batchq.monitor.hosts_view import HostRow
from batchq.records import BatchState, BatchStatus
from batchq.store.presence import WorkerInfo
from batchq.terminal import printable

__all__ = [
    "batch_rows",
    "batches_table",
    "format_age",
    "format_duration",
    "format_limits",
    "hosts_table",
    "workers_table",
]


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
            Text(printable(r["name"] or "")),
            *(
                [
                    Text(
                        printable(
                            " ".join(f"{k}={v}" for k, v in (r.get("metadata") or {}).items())
                        )
                    )
                ]
                if with_meta
                else []
            ),
        )
    return table


@dataclass(frozen=True, slots=True)
class _Column:
    header: str
    cells: list[Text]
    # 0: always shown; the others get room in this order while the console has some.
    rank: int
    right: bool = False
    # Narrowest width it may be ellipsized to, to fit; 0: shown whole or not at all.
    shrink_to: int = 0
    # Widest it grows, however wide the console.
    most: int = 1000

    @property
    def natural(self) -> int:
        return min(self.most, max([cell_len(self.header), *(c.cell_len for c in self.cells)]))

    @property
    def narrowest(self) -> int:
        return min(self.natural, self.shrink_to) if self.shrink_to else self.natural


# Between two columns of a SIMPLE_HEAD table: a padding space each side of a blank divider.
_GAP = 3


class _FittedTable:
    """A table that fits the console it is drawn on (redrawn, it fits a resized terminal):
    rich alone squeezes every column of a table too wide, down to unreadable stumps, so this
    one leaves out the least important columns and ellipsizes only the ones allowed to
    shrink, keeping the others whole."""

    def __init__(self, columns: Sequence[_Column]) -> None:
        self.columns = list(columns)

    def widths(self, max_width: int) -> list[int]:
        """Each column's width, 0 for the ones left out."""
        cols = self.columns

        def need(chosen: set[int]) -> int:
            return sum(cols[i].narrowest for i in chosen) + _GAP * (len(chosen) - 1)

        by_rank = sorted(range(len(cols)), key=lambda i: cols[i].rank)
        chosen = {i for i in by_rank if cols[i].rank == 0}
        for i in by_rank:
            if i not in chosen and need(chosen | {i}) <= max_width:
                chosen.add(i)
        widths = [cols[i].narrowest if i in chosen else 0 for i in range(len(cols))]
        spare = max_width - need(chosen)
        for i in by_rank:
            if i in chosen and spare > 0:
                grow = min(spare, cols[i].natural - widths[i])
                widths[i] += grow
                spare -= grow
        return widths

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        widths = self.widths(options.max_width)
        shown = [(c, w) for c, w in zip(self.columns, widths, strict=True) if w]
        for c, w in shown:
            justify: JustifyMethod = "right" if c.right else "left"
            table.add_column(c.header, justify=justify, width=w, no_wrap=True, overflow="ellipsis")
        for row in zip(*(c.cells for c, _ in shown), strict=True):
            table.add_row(*row)
        yield table


def workers_table(
    workers: Sequence[WorkerInfo],
    now_ms: int,
    *,
    rates: Mapping[str, float | None] | None = None,
    batch_id: str | None = None,
) -> RenderableType:
    """A row per worker, fitted to the console's width: the worker, its items in flight and
    its items/s are always shown whole. ``rates``: items/s by worker id, when the caller
    samples them; ``batch_id``: the watched batch, whose items in flight get their own column
    (otherwise each row lists the batches the worker is running)."""
    if not workers:
        return Text("no live workers", style="yellow")

    def col(header: str, values: Sequence[str | Text], rank: int, **kw: Any) -> _Column:
        # Text, never markup: hosts, endpoints and errors come from elsewhere.
        cells = [v if isinstance(v, Text) else Text(printable(v)) for v in values]
        return _Column(header, cells, rank, **kw)

    ws = list(workers)
    cols = [col("worker", [f"{w.host}:{w.pid}" if w.host else w.worker_id for w in ws], 0)]
    cols.append(col("ollama", [", ".join(w.endpoints) for w in ws], 1, shrink_to=20, most=60))
    if batch_id:
        cols.append(col("this batch", [str(w.running.get(batch_id, 0)) for w in ws], 0, right=True))
    cols.append(col("in flight", [f"{w.in_flight}/{w.concurrency}" for w in ws], 0, right=True))
    if rates is not None:
        per_s = [rates.get(w.worker_id) for w in ws]
        cols.append(
            col("items/s", ["-" if r is None else f"{r:.1f}" for r in per_s], 0, right=True)
        )
    if not batch_id:
        cols += [
            col("done", [str(w.done) for w in ws], 2, right=True),
            col("failed", [_count(w.failed) for w in ws], 3, right=True),
            col("retried", [str(w.retried) for w in ws], 6, right=True),
            col(
                "running batches",
                [" ".join(f"{b}:{n}" for b, n in sorted(w.running.items())) for w in ws],
                7,
                shrink_to=20,
                most=44,
            ),
            col("up", [_up(w, now_ms) for w in ws], 5, right=True),
        ]
    errors = [
        f"{format_age((now_ms - w.last_error_at) / 1000)}: {w.last_error}" if w.last_error else ""
        for w in ws
    ]
    cols.append(col("last error", errors, 4, shrink_to=16, most=50))
    return _FittedTable(cols)


def _up(w: WorkerInfo, now_ms: int) -> str:
    return format_duration((now_ms - w.started_at) / 1000 if w.started_at else None)


def format_limits(limits: Mapping[str, int]) -> str:
    """The automatic limit of each model, ``model=N`` apart; ``-`` for none."""
    return " ".join(f"{m}={n}" for m, n in sorted(limits.items())) or "-"


def hosts_table(rows: Sequence[HostRow]) -> RenderableType:
    """A row per Ollama host, fitted to the console's width: the host, the model it serves,
    its model loads so far and its requests in flight are always shown whole."""

    def col(header: str, values: Sequence[str], rank: int, **kw: Any) -> _Column:
        # Text, never markup: URLs and model names come from elsewhere.
        return _Column(header, [Text(printable(v)) for v in values], rank, **kw)

    return _FittedTable(
        [
            col("ollama", [r.endpoint for r in rows], 0, shrink_to=20, most=60),
            col("serving", [", ".join(r.serving) or "-" for r in rows], 0, most=40),
            col("loads", ["-" if r.loads is None else str(r.loads) for r in rows], 0, right=True),
            col("in flight", [str(r.in_flight) for r in rows], 0, right=True),
            col("auto limit", [format_limits(r.auto_limits) for r in rows], 1, shrink_to=12),
            col("workers", [str(r.workers) for r in rows], 3, right=True),
            col("loaded", [", ".join(r.loaded) or "-" for r in rows], 2, shrink_to=16, most=60),
        ]
    )
