"""``batchq status BATCH --watch``: live progress of one batch until it is final.

Rates are not stored anywhere: the batch's counters (and each worker's, from its heartbeat
hash) are sampled at every refresh, and a rate is the change over the last minute of samples.
On a terminal the display redraws in place (rich); otherwise it prints one plain line per
refresh, or one JSON object with ``--json``.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from batchq import clock
from batchq.monitor.tables import format_duration, workers_table
from batchq.records import BatchStatus
from batchq.store.batches import BatchStore
from batchq.store.presence import (
    NO_WORKERS_AFTER_S,
    NO_WORKERS_NOTICE,
    WorkerAbsence,
    WorkerInfo,
    live_workers,
    notice_without_workers,
)
from batchq.terminal import printable

__all__ = [
    "RATE_WINDOW_S",
    "Rates",
    "View",
    "WorkerView",
    "make_view",
    "plain_line",
    "render",
    "view_json",
    "watch",
]

RATE_WINDOW_S = 60.0


class Rates:
    """Per-second rates of named counters over a sliding window of samples."""

    def __init__(self, window: float = RATE_WINDOW_S) -> None:
        self.window = window
        self._samples: deque[tuple[float, Mapping[str, float]]] = deque()

    def add(self, t: float, counters: Mapping[str, float]) -> None:
        self._samples.append((t, dict(counters)))
        # Keep one sample older than the window, so a rate always spans the whole window.
        while len(self._samples) > 2 and self._samples[1][0] <= t - self.window:
            self._samples.popleft()

    def rate(self, name: str) -> float | None:
        """The counter's change per second from its oldest sample in the window to the
        newest; None until two samples a moment apart have it."""
        seen = [(t, c[name]) for t, c in self._samples if name in c]
        if len(seen) < 2:
            return None
        (t0, v0), (t1, v1) = seen[0], seen[-1]
        if t1 - t0 <= 0:
            return None
        # A counter that went down was reset (a restarted worker): no rate from that span.
        return max(0.0, (v1 - v0) / (t1 - t0))


@dataclass(frozen=True, slots=True)
class WorkerView:
    info: WorkerInfo
    items_per_s: float | None


@dataclass(frozen=True, slots=True)
class View:
    """Everything one refresh shows."""

    status: BatchStatus
    items_per_s: float | None
    tokens_per_s: float | None
    eta_s: float | None
    workers: list[WorkerView]

    @property
    def done(self) -> int:
        return self.status.done


def make_view(status: BatchStatus, workers: list[WorkerInfo], rates: Rates, t: float) -> View:
    counters = {"done": float(status.done)}
    counters["tokens"] = float(status.tokens_out)
    for w in workers:
        counters["w:" + w.worker_id] = float(w.done)
    rates.add(t, counters)
    items_per_s = rates.rate("done")
    remaining = status.total - counters["done"]
    eta = remaining / items_per_s if items_per_s and remaining > 0 else None
    if remaining <= 0:
        eta = 0.0
    return View(
        status=status,
        items_per_s=items_per_s,
        tokens_per_s=rates.rate("tokens"),
        eta_s=eta,
        workers=[WorkerView(w, rates.rate("w:" + w.worker_id)) for w in workers],
    )


def _num(v: float | None, unit: str) -> str:
    return "-" if v is None else f"{v:,.1f} {unit}"


def plain_line(v: View) -> str:
    s = v.status
    pct = 100.0 * v.done / s.total if s.total else 100.0
    in_flight = sum(w.info.running.get(s.batch_id, 0) for w in v.workers)
    return (
        f"{s.batch_id} {s.state.value} {v.done}/{s.total} ({pct:.1f}%) "
        f"succeeded {s.succeeded} failed {s.failed} cancelled {s.cancelled} expired {s.expired} "
        f"retried {s.retried} | {_num(v.items_per_s, 'items/s')} "
        f"{_num(v.tokens_per_s, 'tokens/s')} | ETA {format_duration(v.eta_s)} | "
        f"workers {len(v.workers)}, in flight {in_flight}"
    )


def view_json(v: View) -> dict[str, Any]:
    return {
        **v.status.model_dump(mode="json"),
        "done": v.done,
        "items_per_s": v.items_per_s,
        "tokens_per_s": v.tokens_per_s,
        "eta_s": v.eta_s,
        "workers": [{**w.info.to_json(), "items_per_s": w.items_per_s} for w in v.workers],
    }


def render(v: View, *, notice: str = "") -> RenderableType:
    """The live display; ``notice``, if any, in place of the workers table."""
    s = v.status
    head = Table.grid(padding=(0, 2))
    head.add_column(no_wrap=True)
    head.add_column(ratio=1)
    head.add_column(no_wrap=True, justify="right")
    pct = 100.0 * v.done / s.total if s.total else 100.0
    name = f" ({printable(s.name)})" if s.name else ""
    head.add_row(
        Text(f"{s.batch_id}{name}", style="bold"),
        ProgressBar(total=max(s.total, 1), completed=v.done),
        f"{v.done:,}/{s.total:,} {pct:5.1f}%",
    )
    stats = Text.assemble(
        ("state ", "dim"),
        s.state.value,
        ("  succeeded ", "dim"),
        (f"{s.succeeded:,}", "green"),
        ("  failed ", "dim"),
        (f"{s.failed:,}", "red" if s.failed else ""),
        ("  retried ", "dim"),
        f"{s.retried:,}",
        ("  running ", "dim"),
        f"{s.running:,}",
        ("  queued ", "dim"),
        f"{s.queued:,}",
    )
    speed = Text.assemble(
        ("last minute ", "dim"),
        _num(v.items_per_s, "items/s"),
        ("  ", ""),
        _num(v.tokens_per_s, "tokens/s"),
        ("  ETA ", "dim"),
        format_duration(v.eta_s),
    )
    workers = workers_table(
        [w.info for w in v.workers],
        clock.now_ms(),
        rates={w.info.worker_id: w.items_per_s for w in v.workers},
        batch_id=s.batch_id,
    )
    if notice:
        workers = Text(notice, style="bold yellow")
    return Group(head, stats, speed, workers)


async def watch(
    store: BatchStore,
    batch_id: str,
    *,
    console: Console,
    mode: str,
    interval: float,
    emit: Callable[[str], None] | None = None,
    notice_after: float = NO_WORKERS_AFTER_S,
) -> BatchStatus:
    """Refresh every ``interval`` seconds until the batch is final; ``mode`` is ``live``
    (redrawn in place on ``console``), ``plain`` (a line per refresh) or ``json``. After
    ``notice_after`` seconds without a live worker, it says so: in the live display while
    none is live, else once on stderr."""
    rates = Rates()
    emit = emit or (lambda line: print(line, flush=True))

    async def refresh() -> View:
        status = await store.status(batch_id)
        workers = await live_workers(store.redis, store.keys)
        return make_view(status, workers, rates, clock.monotonic())

    v = await refresh()
    if mode == "live":
        absence = WorkerAbsence(notice_after)

        def draw(v: View) -> RenderableType:
            due = absence.update(len(v.workers), clock.monotonic())
            return render(v, notice=NO_WORKERS_NOTICE if due else "")

        with Live(draw(v), console=console, auto_refresh=False) as live:
            while not v.status.finished_at:
                await asyncio.sleep(interval)
                v = await refresh()
                live.update(draw(v), refresh=True)
        return v.status
    async with notice_without_workers(store.redis, store.keys, after=notice_after):
        while True:
            emit(json.dumps(view_json(v)) if mode == "json" else plain_line(v))
            if v.status.finished_at:
                return v.status
            await asyncio.sleep(interval)
            v = await refresh()
