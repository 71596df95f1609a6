"""The simulator's scheduler: which request runs when. Models are made resident one load at a
time (a load blocks the queue, as in Ollama), the least recently used model is evicted once its
admitted requests finish, each resident model has ``parallel`` slots granted in FIFO order, the
pending queue is bounded (503 beyond it), and failures are injected by seeded dice."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator

from batchq.errors import ConfigError
from batchq.sim.config import SimConfig
from batchq.sim.slots import ModelState
from batchq.sim.wire import BUSY, RUNNER_DIED, ErrorReply

__all__ = ["Scheduler", "seconds"]


def seconds(amount: float, rate: float) -> float:
    # Zero, negative or infinite rates all mean "instant", so benchmarks can switch costs off.
    return amount / rate if 0 < rate < math.inf else 0.0


class Scheduler:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self.parallel = max(1, config.parallel)  # zero slots would hang every request
        self.names = {n: n for n in config.models}
        self.names |= {f"{n}:latest": n for n in config.models if ":" not in n}
        self.eval_rates = {name: config.eval_tokens_per_s for name in config.models}
        for model, rate in config.model_speeds:
            if model not in self.names:
                raise ConfigError(
                    f"a model speed is given for {model!r}, which the simulator does not serve "
                    f"(its models: {', '.join(config.models)})"
                )
            self.eval_rates[self.names[model]] = rate
        # Requests admitted at once, the ones waiting in the queue for a slot included.
        self.peak_in_flight = 0
        self.new_runtime()

    def new_runtime(self) -> None:
        # asyncio primitives bind to the loop that first uses them, so each start gets fresh ones.
        self.states = {name: ModelState() for name in self.config.models}
        self.loaded: OrderedDict[str, float] = OrderedDict()  # model -> last use (epoch s)
        self._lock = asyncio.Lock()
        self.waiting = 0
        self.in_flight = 0

    def clear_peaks(self) -> None:
        for st in self.states.values():
            st.peak = st.busy
        self.peak_in_flight = self.in_flight

    def resolve(self, model: str) -> str:
        name = self.names.get(model)
        if name is None:
            raise ErrorReply(404, f"model '{model}' not found")
        return name

    def admit(self, name: str) -> tuple[bool, bool]:
        """Roll the failure dice and apply the pending-queue bound; returns (midstream, slow)."""
        cfg, rng = self.config, self._rng
        # Always four draws, so the failure sequence depends only on the seed and request order.
        r503, r500, rmid, rslow = rng.random(), rng.random(), rng.random(), rng.random()
        if r503 < cfg.fail_503:
            raise ErrorReply(503, BUSY)
        if r500 < cfg.fail_500:
            raise ErrorReply(500, RUNNER_DIED)
        st = self.states[name]
        ready = name in self.loaded and st.busy < self.parallel and not st.waiters
        if not (ready and not self._lock.locked()) and self.waiting >= cfg.max_queue:
            raise ErrorReply(503, BUSY)
        return rmid < cfg.fail_midstream, rslow < cfg.slow_rate

    @contextlib.asynccontextmanager
    async def slot(self, name: str) -> AsyncIterator[ModelState]:
        """Hold `name` resident and one of its slots, both granted in FIFO order."""
        st = self.states[name]
        self.waiting += 1
        try:
            async with self._lock:  # one load at a time, and it blocks the queue, as in Ollama
                if name not in self.loaded:
                    await self._load(name)
                self.loaded[name] = time.time()
                self.loaded.move_to_end(name)
                st.refs += 1
                st.idle.clear()
            try:
                await st.acquire(self.parallel)
            except BaseException:
                st.unpin()
                raise
        finally:
            self.waiting -= 1
        try:
            st.peak = max(st.peak, st.busy)
            yield st
        finally:
            st.release()
            st.unpin()

    async def _load(self, name: str) -> None:
        limit = self.config.max_loaded
        while limit > 0 and len(self.loaded) >= limit:
            victim = next(iter(self.loaded))
            # Like Ollama, the evicted model first finishes every request already admitted to it.
            await self.states[victim].idle.wait()
            del self.loaded[victim]
        if self.config.load_seconds > 0:
            await asyncio.sleep(self.config.load_seconds)

    def stall(self, n_prompt: int, slow: bool) -> float:
        cfg = self.config
        stall = seconds(n_prompt, cfg.prompt_tokens_per_s) + max(cfg.latency, 0.0)
        return stall + (max(cfg.slow_seconds, 0.0) if slow else 0.0)

    @contextlib.contextmanager
    def counted(self) -> Iterator[None]:
        """An admitted request, waiting for a slot or holding one."""
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1
