"""The simulator's scheduler: which request runs when, and which models are resident. It models
Ollama's ``server/sched.go``:

- ``GetRunner``: a request beyond ``max_queue`` pending ones is refused at once with
  ``ErrMaxQueue`` (a 503, :meth:`Scheduler.admit`).
- ``processPending``: pending requests are taken one at a time (one lock, held across a load and
  the unloads before it, so one request for another model stalls everything behind it). A model
  not loaded loads if it fits ``OLLAMA_MAX_LOADED_MODELS`` (``max_loaded``) and the VRAM budget
  (``vram_gb``, the sum of the loaded models' sizes, as ``updateFreeSpace``/``pickBestFitGPUs``
  predict it); else ``findRunnerToUnload`` picks a victim, whose session duration is set to 0 so
  it unloads once its admitted requests finish, and the loop waits for that unload and looks
  again. The first model always loads, whatever its size (Ollama then spills to the CPU).
- ``findRunnerToUnload``: loaded models sorted by session duration (``ByDuration``, ties by least
  recent use here, where Go's order is the map's), the first idle one, else the first.
- ``load``: the session duration is the request's ``keep_alive``, else ``OLLAMA_KEEP_ALIVE``
  (``keep_alive``); it takes the model's load seconds.
- ``useLoadedRunner``: a request pins the model (``refCount``), stops its expiry timer and, when it
  gives a ``keep_alive``, replaces the model's session duration.
- ``processCompleted``: when the last request of a model finishes, a duration <= 0 unloads it at
  once, else a timer unloads it after the duration and ``expiresAt`` is set (what ``/api/ps``
  reports; a busy model reports now + its duration, as ``PsHandler`` does before ``expiresAt``
  is set).
- ``expireRunner`` (an empty prompt with ``keep_alive: 0``): the duration becomes 0 and the
  model unloads once idle.

Each resident model has ``parallel`` slots granted in FIFO order (``NUM_PARALLEL``), and
failures are injected by seeded dice."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator

from batchq.errors import ConfigError
from batchq.sim.config import SimConfig, default_size_gb, parse_duration
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
        models = config.models
        speeds = {n: config.eval_tokens_per_s for n in models}
        self.eval_rates = self._per_model("speed", speeds, config.model_speeds)
        loads = {n: config.load_seconds for n in models}
        self.load_seconds = self._per_model("load time", loads, config.model_load_seconds)
        sizes = {n: default_size_gb(n) for n in models}
        self.sizes = self._per_model("size", sizes, config.model_sizes)
        try:
            self.keep_alive = parse_duration(config.keep_alive)
        except ValueError as e:
            raise ConfigError(f"--keep-alive: {e}") from None
        # Requests admitted at once, the ones waiting in the queue for a slot included.
        self.peak_in_flight = 0
        self.new_runtime()

    def _per_model(
        self, what: str, values: dict[str, float], given: tuple[tuple[str, float], ...]
    ) -> dict[str, float]:
        for model, value in given:
            if model not in self.names:
                raise ConfigError(
                    f"a model {what} is given for {model!r}, which the simulator does not serve "
                    f"(its models: {', '.join(self.config.models)})"
                )
            values[self.names[model]] = value
        return values

    def new_runtime(self) -> None:
        # asyncio primitives bind to the loop that first uses them, so each start gets fresh ones.
        for timer in getattr(self, "_timers", {}).values():
            timer.cancel()  # a restart on the same loop must not have old expiries fire
        self.states = {name: ModelState() for name in self.config.models}
        self.loaded: OrderedDict[str, float] = OrderedDict()  # model -> last use (epoch s)
        self.durations: dict[str, float] = {}  # a loaded model's session duration (s; inf)
        self._expires: dict[str, float] = {}  # an idle model's expiresAt (epoch s; inf)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._lock = asyncio.Lock()
        self.waiting = 0
        self._waited = 0.0  # the integral of `waiting` over time (request-seconds)
        self._waited_mark = time.monotonic()
        self.in_flight = 0
        self.loads: dict[str, int] = {}
        self.unloads: dict[str, int] = {}

    def _add_waiting(self, delta: int) -> None:
        now = time.monotonic()
        self._waited += self.waiting * (now - self._waited_mark)
        self._waited_mark = now
        self.waiting += delta

    def waited_seconds(self) -> float:
        """Request-seconds spent waiting inside the server (for a slot, or for a load) since
        the last reset: over an interval, its growth divided by the interval's length is the
        time-averaged number of requests waiting."""
        return self._waited + self.waiting * (time.monotonic() - self._waited_mark)

    def clear_peaks(self) -> None:
        self._add_waiting(0)
        self._waited = 0.0
        for st in self.states.values():
            st.peak = st.busy
        self.peak_in_flight = self.in_flight
        self.loads, self.unloads = {}, {}

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

    def expires_at(self, name: str) -> float:
        """When the loaded `name` unloads if no request comes (epoch s; inf: never)."""
        if name in self._expires:
            return self._expires[name]
        return time.time() + self.durations.get(name, self.keep_alive)  # busy: now + duration

    @contextlib.asynccontextmanager
    async def slot(self, name: str, keep_alive: float | None = None) -> AsyncIterator[ModelState]:
        """Hold `name` resident and one of its slots, both granted in FIFO order; `keep_alive`
        is the request's own (seconds, inf: forever), None for the model's current one."""
        st = self.states[name]
        self._add_waiting(1)
        try:
            async with self._lock:  # processPending: one pending request at a time
                if name not in self.loaded:
                    await self._load(name)
                self._pin(name, keep_alive)
            try:
                await st.acquire(self.parallel)
            except BaseException:
                self._unpin(name)
                raise
        finally:
            self._add_waiting(-1)
        try:
            st.peak = max(st.peak, st.busy)
            yield st
        finally:
            st.release()
            self._unpin(name)

    def _pin(self, name: str, keep_alive: float | None) -> None:
        # useLoadedRunner: pinned, its timer stopped, its duration the request's if it gives one.
        self.loaded[name] = time.time()
        self.loaded.move_to_end(name)
        st = self.states[name]
        st.refs += 1
        st.idle.clear()
        self._stop_timer(name)
        if keep_alive is not None:
            self.durations[name] = keep_alive

    def _unpin(self, name: str) -> None:
        # processCompleted: the last request gone, unload now or once the duration has passed.
        st = self.states[name]
        st.unpin()
        if st.refs or name not in self.loaded:
            return
        duration = self.durations.get(name, self.keep_alive)
        if duration <= 0:
            self._unload(name)
            return
        self._expires[name] = time.time() + duration
        if duration < math.inf:
            loop = asyncio.get_running_loop()
            self._timers[name] = loop.call_later(duration, self._expired, name)

    def _expired(self, name: str) -> None:
        self._timers.pop(name, None)
        if self.states[name].refs == 0:
            self._unload(name)

    def expire(self, name: str) -> None:
        """expireRunner: unload `name` as soon as it is idle (an empty prompt, keep_alive 0)."""
        if name in self.loaded:
            self.durations[name] = 0.0
            self._stop_timer(name)
            if self.states[name].refs == 0:
                self._unload(name)

    def _stop_timer(self, name: str) -> None:
        self._expires.pop(name, None)
        if (timer := self._timers.pop(name, None)) is not None:
            timer.cancel()

    def _unload(self, name: str) -> None:
        if self.loaded.pop(name, None) is None:
            return  # already gone: a timer and an eviction may both get here
        self._stop_timer(name)
        self.durations.pop(name, None)
        self.unloads[name] = self.unloads.get(name, 0) + 1

    def _fits(self, name: str) -> bool:
        limit = self.config.max_loaded
        if limit > 0 and len(self.loaded) >= limit:
            return False
        if self.config.vram_gb <= 0:
            return True
        used = sum(self.sizes[m] for m in self.loaded)
        return used + self.sizes[name] <= self.config.vram_gb + 1e-9

    def _victim(self) -> str:
        # findRunnerToUnload: by session duration (least recently used first among equals),
        # the first idle one, else the first.
        order = sorted(self.loaded, key=lambda m: self.durations.get(m, self.keep_alive))
        idle = [m for m in order if self.states[m].refs == 0]
        return (idle or order)[0]

    async def _load(self, name: str) -> None:
        while self.loaded and not self._fits(name):
            victim = self._victim()
            # "resetting model to expire immediately to make room": it unloads once idle.
            self.expire(victim)
            # Like Ollama, the evicted model first finishes every request already admitted to it.
            await self.states[victim].idle.wait()
            self._unload(victim)
        if (load := self.load_seconds[name]) > 0:
            await asyncio.sleep(load)
        self.loads[name] = self.loads.get(name, 0) + 1
        # The server's default; the request's own keep_alive replaces it as it pins the model.
        self.durations[name] = self.keep_alive

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
