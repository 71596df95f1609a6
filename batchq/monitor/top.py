"""``batchq top``: the live workers and their Ollama hosts, from what each worker publishes on
its heartbeat."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from batchq import clock
from batchq.monitor.hosts_view import AutoLimits, HostRow, host_rows
from batchq.monitor.tables import hosts_table, workers_table
from batchq.monitor.watch import Rates
from batchq.store.batches import BatchStore
from batchq.store.presence import WorkerInfo, live_workers

__all__ = ["Snapshot", "snapshot", "top"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    workers: list[WorkerInfo]
    queued_jobs: int  # jobs in arq's queue: the dispatch window, not the batches' backlog
    now_ms: int
    hosts: list[HostRow] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "workers": [
                {**w.to_json(), "heartbeat_age_s": max(0.0, (self.now_ms - w.seen_at) / 1000)}
                for w in self.workers
            ],
            "queued_jobs": self.queued_jobs,
            "hosts": [h.to_json() for h in self.hosts],
        }


async def snapshot(store: BatchStore, *, auto_limits: AutoLimits | None = None) -> Snapshot:
    workers = await live_workers(store.redis, store.keys)
    queued = int(await store.redis.zcard(store.keys.queue))
    hosts = await host_rows(store.redis, store.keys, workers, auto_limits=auto_limits)
    return Snapshot(workers, queued, clock.now_ms(), hosts)


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
    parts = [head, workers_table(ws, snap.now_ms, rates=per_worker)]
    if snap.hosts:
        parts += [Text(""), hosts_table(snap.hosts)]
    return Group(*parts)


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
