"""``batchq top``: the live workers, from what each publishes on its heartbeat."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from batchq import clock
from batchq.monitor.tables import workers_table
from batchq.monitor.watch import Rates
from batchq.store.batches import BatchStore
from batchq.store.presence import WorkerInfo, live_workers

__all__ = ["Snapshot", "snapshot", "top"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    workers: list[WorkerInfo]
    queued_jobs: int  # jobs in arq's queue: the dispatch window, not the batches' backlog
    now_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "workers": [
                {**w.to_json(), "heartbeat_age_s": max(0.0, (self.now_ms - w.seen_at) / 1000)}
                for w in self.workers
            ],
            "queued_jobs": self.queued_jobs,
        }


async def snapshot(store: BatchStore) -> Snapshot:
    workers = await live_workers(store.redis, store.keys)
    queued = int(await store.redis.zcard(store.keys.queue))
    return Snapshot(workers, queued, clock.now_ms())


def render(snap: Snapshot, rates: Rates | None) -> RenderableType:
    ws = snap.workers
    in_flight = sum(w.in_flight for w in ws)
    slots = sum(w.concurrency for w in ws)
    head = Text.assemble(
        (f"{len(ws)} worker(s) alive", "bold"),
        f"   in flight {in_flight}/{slots}   jobs in arq's queue {snap.queued_jobs}",
    )
    per_worker = None
    if rates is not None:
        per_worker = {w.worker_id: rates.rate(w.worker_id) for w in ws}
    return Group(head, workers_table(ws, snap.now_ms, rates=per_worker))


async def top(store: BatchStore, *, console: Console, interval: float) -> None:
    """Redraw every ``interval`` seconds until interrupted."""
    rates = Rates()

    async def refresh() -> RenderableType:
        snap = await snapshot(store)
        rates.add(clock.monotonic(), {w.worker_id: float(w.done) for w in snap.workers})
        return render(snap, rates)

    with Live(await refresh(), console=console, auto_refresh=False) as live:
        while True:
            await asyncio.sleep(interval)
            live.update(await refresh(), refresh=True)
