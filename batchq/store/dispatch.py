"""The dispatcher: moves items from their batches into arq's queue, a small window at a time.

arq's queue is one sorted set that every worker scans and that keeps running jobs, so it is
kept to about ``dispatch_window`` times the live workers' slots; the rest of every batch waits in
batchq's own per-batch cursor. Each call is one atomic Lua script, safe to run from every
worker at once: workers call it on a short timer and after every job, which keeps the window
full without any process being "the" dispatcher.
"""

from __future__ import annotations

from collections.abc import Sequence

from batchq import clock
from batchq.settings import Settings
from batchq.store.scripts import DispatchOutcome, Scripts

__all__ = ["JOB_FUNCTION", "Dispatcher"]

JOB_FUNCTION = "run_item"

# Enough for a worker that has not registered yet to make progress.
_MIN_WINDOW = 2


class Dispatcher:
    def __init__(self, scripts: Scripts, settings: Settings) -> None:
        self.scripts = scripts
        self.settings = settings

    async def run(self, max_items: int = 1000, models: Sequence[str] = ()) -> DispatchOutcome:
        """Fill the window; ``models``: only those models' batches, a window each (see
        :mod:`batchq.store.models`)."""
        return await self.scripts.dispatch(
            now_ms=clock.now_ms(),
            job_ttl_ms=int(self.settings.job_ttl * 1000),
            function=JOB_FUNCTION,
            max_items=max_items,
            window_factor=self.settings.dispatch_window,
            min_window=_MIN_WINDOW,
            models=models,
        )
