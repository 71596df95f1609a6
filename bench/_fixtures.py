"""The benchmark's shared state: result rows, and the fixtures several targets reuse (the big
batch, the arq baseline, the zero-latency run), each built once per run on first use."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

from _harness import (
    PY,
    ChildRun,
    Lab,
    Sim,
    http_loop,
    prompt_text,
    run_child,
    self_cpu_s,
    write_prompts,
)
from arq.connections import RedisSettings, create_pool

from batchq.records import ItemStatus
from batchq.sim.process import expected_response
from batchq.store.codec import encode_result
from batchq.store.keys import Keys

BIG_PREFIX = "big"


@dataclass
class Row:
    num: int
    target: str
    goal: str
    measured: str
    baseline: str
    ratio: str
    verdict: str  # meets | misses | report | error
    data: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # printed under the table: what else was seen (CPU, attribution)


def verdict(ok: bool) -> str:
    return "meets" if ok else "misses"


@dataclass(frozen=True)
class BigBatch:
    prefix: str
    batch_id: str
    n: int
    prompt_bytes: int
    submit: ChildRun
    mem_delta: int  # used_memory after the submit minus before


@dataclass(frozen=True)
class ArqBase:
    n: int
    seconds: float
    overhead_per_job: float  # used_memory per job, minus its prompt's bytes

    @property
    def rate(self) -> float:
        return self.n / self.seconds


@dataclass(frozen=True)
class QueueRun:
    n: int
    batch_id: str
    meta: dict[str, str]
    prompt_bytes: int
    mem_before: int
    mem_done: int
    key_bytes: dict[str, int]  # MEMORY USAGE of the batch's keys once done, for attribution
    worker_cpu_s: float  # both workers, during the batch
    sim_cpu_s: float  # the simulator, during the batch
    server_cpu_s: float  # Valkey, during the batch
    server_commands: int  # commands Valkey processed during the batch
    baseline_s: float  # the bare gather loop over the same calls, same simulator
    baseline_cpu_s: float  # the loop's own CPU
    baseline_sim_cpu_s: float  # the simulator, during the loop


@dataclass(frozen=True)
class PyBase:
    """A Python child that only imports batchq's CLI: start-up time and RSS floor."""

    seconds: float
    max_rss_mb: float


class Ctx:
    def __init__(self, lab: Lab, *, quick: bool) -> None:
        self.lab = lab
        self.quick = quick
        self.scale = 0.1 if quick else 1.0
        self.rows: list[Row] = []
        self.t0 = time.perf_counter()
        self._big: BigBatch | None = None
        self._tenth: BigBatch | None = None
        self._arq: ArqBase | None = None
        self._queue: QueueRun | None = None
        self._py: PyBase | None = None

    def n(self, full: int) -> int:
        return max(1, round(full * self.scale))

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        self.log(f"  -> {row.target}: {row.measured} [{row.verdict}]")

    # -- fixtures -----------------------------------------------------------------------------

    def big_batch(self, n: int) -> BigBatch:
        """The big batch, submitted with the CLI (timed, peak RSS); ``n`` only if it is new."""
        if self._big is None:
            self._big = self._submit(BIG_PREFIX, n)
        return self._big

    def tenth_batch(self) -> BigBatch:
        """A batch a tenth the size of the big one: how client memory grows with size."""
        if self._tenth is None:
            big = self.big_batch(self.n(1_000_000))
            self._tenth = self._submit("tenth", max(1, big.n // 10))
        return self._tenth

    def _submit(self, prefix: str, n: int) -> BigBatch:
        lab = self.lab
        path = lab.root / f"{prefix}.jsonl"
        self.log(f"writing {n:,} prompts of ~500 B")
        prompt_bytes = write_prompts(path, n)
        lab.quiesce()
        mem0 = lab.used_memory()
        self.log(f"batchq submit of {n:,} items")
        bid, run = lab.submit(prefix, path)
        lab.quiesce()
        mem1 = lab.used_memory()
        path.unlink()
        return BigBatch(prefix, bid, n, prompt_bytes, run, mem1 - mem0)

    def arq_base(self) -> ArqBase:
        if self._arq is None:
            n = self.n(5000)
            self.log(f"arq enqueue_job baseline, {n:,} jobs")
            seconds, mem = asyncio.run(_arq_enqueue(self.lab.url, n))
            prompts = sum(len(prompt_text(i).encode()) for i in range(n))
            self._arq = ArqBase(n, seconds, (mem - prompts) / n)
        return self._arq

    def py_base(self) -> PyBase:
        if self._py is None:
            runs = [
                run_child([PY, "-c", "import batchq.cli.main, batchq.local.runner"])
                for _ in range(5)
            ]
            secs = sorted(r.seconds for r in runs)[2]
            self._py = PyBase(secs, max(r.max_rss_mb for r in runs))
        return self._py

    def queue_run(self) -> QueueRun:
        """N items through 2 workers x 16 against a zero-latency simulator, then the bare loop
        over the same calls against the same simulator."""
        if self._queue is None:
            lab, n, prefix = self.lab, self.n(20_000), "queue"
            path = lab.root / "queue.jsonl"
            prompt_bytes = write_prompts(path, n)
            with Sim(lab.logs / "sim-queue.log", parallel=64, latency=0.0) as sim:
                with lab.workers(prefix, 2, ollama=sim.url, concurrency=16) as workers:
                    lab.quiesce()
                    mem0 = lab.used_memory()
                    self.log(f"queue: {n:,} items, 2 workers x 16, zero-latency simulator")
                    sim0, (srv0, cmd0), w0 = sim.cpu_s(), lab.server_counters(), workers.cpu_s()
                    bid, _ = lab.submit(prefix, path)
                    meta = lab.wait_done(prefix, bid, timeout=1800)
                    sim_cpu, (srv1, cmd1) = sim.cpu_s() - sim0, lab.server_counters()
                    worker_cpu = workers.cpu_s() - w0
                lab.quiesce()
                mem_done = lab.used_memory()
                key_bytes = lab.key_bytes(prefix, bid)
                self.log("queue: baseline gather loop, Semaphore(32)")
                prompts = [prompt_text(i) for i in range(n)]
                sim0, cpu0 = sim.cpu_s(), self_cpu_s()
                base_s = asyncio.run(http_loop(sim.url, prompts, concurrency=32))
                base_cpu, base_sim = self_cpu_s() - cpu0, sim.cpu_s() - sim0
            self._queue = QueueRun(
                n,
                bid,
                meta,
                prompt_bytes,
                mem0,
                mem_done,
                key_bytes,
                worker_cpu,
                sim_cpu,
                srv1 - srv0,
                cmd1 - cmd0,
                base_s,
                base_cpu,
                base_sim,
            )
        return self._queue


async def _arq_enqueue(url: str, n: int) -> tuple[float, int]:
    """arq's own ``enqueue_job``, one job per prompt, sequentially, in database 1."""
    pool = await create_pool(RedisSettings.from_dsn(url.rstrip("/") + "/1"))
    try:
        await pool.flushdb()
        mem0 = int(cast(dict[str, Any], await pool.info("memory"))["used_memory"])
        t0 = time.perf_counter()
        for i in range(n):
            await pool.enqueue_job("run_item", prompt_text(i), _queue_name="arqbase:queue")
        seconds = time.perf_counter() - t0
        mem1 = int(cast(dict[str, Any], await pool.info("memory"))["used_memory"])
        await pool.flushdb()
    finally:
        await pool.aclose()
    return seconds, mem1 - mem0


def fill_results(lab: Lab, big: BigBatch) -> None:
    """BENCHMARK FIXTURE, not batchq's code path: writes a success result for every item of
    the big batch straight into its results hash (what finish.lua would have written) and marks
    the batch completed, so that exporting a million results needs no million requests."""
    bk = Keys(big.prefix).batch(big.batch_id)
    metrics = {
        "total_duration": 5043500667,
        "load_duration": 5025959,
        "prompt_eval_count": 96,
        "prompt_eval_duration": 325953000,
        "eval_count": 8,
        "eval_duration": 4709213000,
        "done_reason": "stop",
    }
    chunk = 1000
    for start in range(0, big.n, chunk * 10):
        with lab.r.pipeline(transaction=False) as pipe:
            for lo in range(start, min(start + chunk * 10, big.n), chunk):
                fields = {
                    str(i): encode_result(
                        ItemStatus.SUCCEEDED,
                        response=expected_response("llama3.2", prompt_text(i)),
                        attempts=1,
                        metrics=metrics,
                    )
                    for i in range(lo, min(lo + chunk, big.n))
                }
                pipe.hset(bk.results, mapping=fields)
            pipe.execute()
    now = int(time.time() * 1000)
    with lab.r.pipeline(transaction=True) as tx:
        tx.hset(
            bk.meta,
            mapping={
                "state": "completed",
                "next": big.n,
                "running": 0,
                "succeeded": big.n,
                "failed": 0,
                "cancelled": 0,
                "cancel_from": -1,
                "active": 0,
                "finished_at": now,
            },
        )
        tx.zrem(Keys(big.prefix).ready_level(0), big.batch_id)
        tx.zrem(Keys(big.prefix).open, big.batch_id)
        tx.delete(bk.redo, bk.tries)
        tx.execute()


def raw_export(lab: Lab, big: BigBatch, out_path: str) -> float:
    """The floor of an export: the same chunked HMGETs of items and results, written out as
    they come (no decoding), in-process."""
    bk = Keys(big.prefix).batch(big.batch_id)
    t0 = time.perf_counter()
    with open(out_path, "wb") as out:
        for start in range(0, big.n, 1000):
            fields = [str(i) for i in range(start, min(start + 1000, big.n))]
            with lab.r.pipeline(transaction=False) as pipe:
                pipe.hmget(bk.items, fields)
                pipe.hmget(bk.results, fields)
                _, results = pipe.execute()
            out.write(b"\n".join(r or b"" for r in results) + b"\n")
    return time.perf_counter() - t0


__all__ = [
    "BIG_PREFIX",
    "ArqBase",
    "BigBatch",
    "Ctx",
    "PyBase",
    "QueueRun",
    "Row",
    "fill_results",
    "raw_export",
    "verdict",
]
