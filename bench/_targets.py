"""The targets of the benchmark. Each appends its rows to the context; each figure is
measured in this run, and so is the baseline it is compared with."""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

from _api import t_openai_api
from _auto import t_auto
from _embed import t_embed
from _fairness import t_fairness
from _fixtures import BigBatch, Ctx, Row, fill_results, raw_export, verdict
from _harness import (
    MODEL,
    ChildRun,
    Sim,
    batchq_cmd,
    http_loop,
    makespan_s,
    prompt_text,
    run_child,
    write_prompts,
)
from _models import t_models, t_models_turns

from batchq.options import SubmitOptions
from batchq.records import Endpoint, Item, ItemStatus
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.codec import decode_result, encode_result
from batchq.store.connection import connect
from batchq.store.keys import Keys

KB = 1024
MAX_CLIENT_RSS_MB = 300.0


def t_submit(ctx: Ctx) -> None:
    big = ctx.big_batch(ctx.n(1_000_000))
    arq, py = ctx.arq_base(), ctx.py_base()
    s = big.submit.seconds
    goal_s = 30.0 * big.n / 1_000_000
    rate = big.n / s
    ctx.add(
        Row(
            1,
            "submit: wall time",
            f"{big.n:,} in ≤ {goal_s:g} s",
            f"{s:.1f} s ({rate:,.0f} items/s)",
            f"arq enqueue_job {arq.rate:,.0f} jobs/s",
            f"{rate / arq.rate:.1f}x",
            verdict(s <= goal_s),
            {"n": big.n, "seconds": s, "items_per_s": rate, "arq_jobs_per_s": arq.rate},
        )
    )
    tenth = ctx.tenth_batch()
    rss, rss10 = big.submit.max_rss_mb, tenth.submit.max_rss_mb
    ctx.add(
        Row(
            1,
            "submit: client peak RSS",
            f"≤ {MAX_CLIENT_RSS_MB:g} MB",
            f"{rss:.0f} MB",
            f"{tenth.n:,} items: {rss10:.0f} MB",
            f"{rss / rss10:.2f}x",
            verdict(rss <= MAX_CLIENT_RSS_MB),
            {"max_rss_mb": rss, "tenth_rss_mb": rss10, "import_rss_mb": py.max_rss_mb},
            _rss_note(rss, rss10, big.n, tenth.n, py.max_rss_mb),
        )
    )


def _rss_note(rss: float, rss10: float, n: int, n10: int, base: float) -> str:
    note = f"a child that only imports batchq peaks at {base:.0f} MB; "
    if rss - rss10 < 5 or n <= n10:
        return note + f"flat from {n10:,} to {n:,} items (within 5 MB)"
    slope = (rss - rss10) * 2**20 / (n - n10)
    at = n + (MAX_CLIENT_RSS_MB - rss) * 2**20 / slope
    return note + (
        f"grows {slope:,.0f} B/item from {n10:,} to {n:,} items, so {MAX_CLIENT_RSS_MB:g} MB"
        f" would be reached near {at / 1e6:.1f}M items"
    )


def _stored_prose(ctx: Ctx, n: int, size: int = 2000) -> dict[str, float]:
    """Bytes per stored result and encoding CPU, for ``n`` succeeded results whose responses
    are ``size``-character windows of this repository's README (prose, lists and code, as
    model output is), stored deflated by batchq and, as the baseline, as plain JSON."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    text = text * (size // len(text) + 2)
    metrics = {"eval_count": 500, "prompt_eval_count": 40, "total_duration": 9_876_543_210}
    responses = [text[(i * 997) % (len(text) - size) :][:size] for i in range(n)]
    t0 = time.process_time()
    stored = [
        encode_result(ItemStatus.SUCCEEDED, response=r, attempts=1, metrics=metrics)
        for r in responses
    ]
    t1 = time.process_time()
    plain = [
        json.dumps({"s": "succeeded", "a": 1, "r": r, "m": metrics}, ensure_ascii=False)
        for r in responses
    ]
    t2 = time.process_time()
    for r in stored:
        decode_result(0, None, r if isinstance(r, bytes) else r.encode())
    t3 = time.process_time()
    out: dict[str, float] = {}
    for name, values in (("deflated", stored), ("plain", plain)):
        key = f"membench:{name}"
        ctx.lab.r.delete(key)
        for start in range(0, n, 1000):
            ctx.lab.r.hset(
                key, mapping={str(i): values[i] for i in range(start, min(n, start + 1000))}
            )
        out[name] = int(cast(int, ctx.lab.r.memory_usage(key, samples=0))) / n
        ctx.lab.r.delete(key)
    out["encode_us"] = (t1 - t0) / n * 1e6
    out["json_us"] = (t2 - t1) / n * 1e6
    out["decode_us"] = (t3 - t2) / n * 1e6
    out["response_bytes"] = sum(len(r.encode()) for r in responses) / n
    return out


def t_memory(ctx: Ctx) -> None:
    big, arq = ctx.big_batch(ctx.n(1_000_000)), ctx.arq_base()
    queued = (big.mem_delta - big.prompt_bytes) / big.n
    ctx.add(
        Row(
            2,
            "redis: bytes/item queued (- prompt)",
            "≤ 1.5 KB",
            f"{queued:,.0f} B ({big.n:,} items)",
            f"arq job {arq.overhead_per_job:,.0f} B",
            f"{queued / arq.overhead_per_job:.2f}x",
            verdict(queued <= 1.5 * KB),
            {"bytes_per_item": queued, "arq_bytes_per_job": arq.overhead_per_job},
        )
    )
    q = ctx.queue_run()
    done = (q.mem_done - q.mem_before - q.prompt_bytes) / q.n
    kb = q.key_bytes
    ctx.add(
        Row(
            2,
            "redis: bytes/item done (- prompt)",
            "≤ 1.5 KB",
            f"{done:,.0f} B ({q.n:,} items)",
            f"queued {queued:,.0f} B",
            f"{done / queued:.2f}x",
            verdict(done <= 1.5 * KB),
            {"bytes_per_item": done, "queued_bytes_per_item": queued, "key_bytes": kb},
            "MEMORY USAGE of the done batch's hashes: "
            + ", ".join(f"{k} {v / q.n:,.0f} B/item" for k, v in kb.items())
            + " (prompts included)",
        )
    )
    n = ctx.n(20_000)
    z = _stored_prose(ctx, n)
    ctx.add(
        Row(
            2,
            "redis: bytes/result, ~2 KB prose responses",
            "(compression welcome)",
            f"{z['deflated']:,.0f} B ({n:,} results)",
            f"plain JSON {z['plain']:,.0f} B",
            f"{z['deflated'] / z['plain']:.2f}x",
            "report",
            z,
            f"responses average {z['response_bytes']:,.0f} B of UTF-8; encoding costs"
            f" {z['encode_us']:.0f} µs/result against json.dumps {z['json_us']:.0f} µs; reading"
            f" one back {z['decode_us']:.0f} µs",
        )
    )


async def _status_times(ctx: Ctx, big: BigBatch, calls: int) -> dict[str, float]:
    redis = connect(ctx.lab.url)
    try:
        store = BatchStore(redis, Keys(big.prefix))
        small = BatchStore(redis, Keys("small"))
        if not await small.recent():
            items = (
                Item(str(i), Endpoint.GENERATE, {"model": MODEL, "prompt": "p"}) for i in range(10)
            )
            await small.submit(items, SubmitOptions(name="small"))

        calls_by_name: dict[str, Callable[[], Awaitable[object]]] = {
            "status": lambda: store.status(big.batch_id),
            "ping": redis.ping,
            "recent_big": store.recent,
            "recent_small": small.recent,
        }
        # Interleaved, so that the noise of a shared machine falls on all of them alike.
        times: dict[str, list[float]] = {name: [] for name in calls_by_name}
        for i in range(calls + 1):
            for name, fn in calls_by_name.items():
                t0 = time.perf_counter()
                await fn()
                if i:  # the first round warms up
                    times[name].append(time.perf_counter() - t0)
        return {name: statistics.median(ts) for name, ts in times.items()}
    finally:
        await redis.aclose()


def t_status(ctx: Ctx) -> None:
    big = ctx.big_batch(ctx.n(1_000_000))
    t = asyncio.run(_status_times(ctx, big, 50))
    ms = {k: v * 1000 for k, v in t.items()}
    ctx.add(
        Row(
            3,
            "status(): median of 50, in-process",
            "≤ 50 ms",
            f"{ms['status']:.2f} ms ({big.n:,} items)",
            f"redis PING {ms['ping']:.2f} ms",
            f"{ms['status'] / ms['ping']:.1f}x",
            verdict(ms["status"] <= 50),
            {"status_ms": ms["status"], "ping_ms": ms["ping"]},
        )
    )
    env = ctx.lab.env(big.prefix)
    cli = [run_child(batchq_cmd("status", big.batch_id, "--json"), env) for _ in range(5)]
    for c in cli:
        c.check("batchq status")
    cli_s = statistics.median(c.seconds for c in cli)
    py = ctx.py_base()
    ctx.add(
        Row(
            3,
            "batchq status --json: wall, median of 5",
            "(report)",
            f"{cli_s * 1000:.0f} ms",
            f"python -c 'import batchq.cli.main' {py.seconds * 1000:.0f} ms",
            f"{cli_s / py.seconds:.2f}x",
            "report",
            {"cli_ms": cli_s * 1000, "import_ms": py.seconds * 1000},
        )
    )
    with_big = ms["recent_big"]
    ratio = with_big / ms["recent_small"]
    ctx.add(
        Row(
            3,
            "recent(): big batch vs small, median of 50",
            "independent (≤ 2x)",
            f"{with_big:.2f} ms (with {big.n:,}-item batch)",
            f"small batch only {ms['recent_small']:.2f} ms",
            f"{ratio:.2f}x",
            verdict(ratio <= 2.0),
            {"with_big_ms": with_big, "small_only_ms": ms["recent_small"]},
        )
    )


def _export(ctx: Ctx, batch: BigBatch) -> ChildRun:
    """``batchq results -o FILE`` of a batch whose results the fixture wrote; checks the lines."""
    lab = ctx.lab
    ctx.log(f"export: writing {batch.n:,} results into the batch (fixture)")
    fill_results(lab, batch)
    lab.quiesce()
    out = lab.root / "results.jsonl"
    ctx.log(f"export: batchq results of {batch.n:,}")
    run = run_child(batchq_cmd("results", batch.batch_id, "-o", str(out)), lab.env(batch.prefix))
    run.check("batchq results")
    with out.open("rb") as f:
        lines = sum(1 for _ in f)
    out.unlink()
    if lines != batch.n:
        raise RuntimeError(f"export wrote {lines} lines, expected {batch.n}")
    return run


def t_export(ctx: Ctx) -> None:
    lab = ctx.lab
    big, tenth = ctx.big_batch(ctx.n(1_000_000)), ctx.tenth_batch()
    run = _export(ctx, big)
    ctx.log("export: raw HMGET baseline")
    out = lab.root / "raw.jsonl"
    raw_s = raw_export(lab, big, str(out))
    out.unlink()
    run10 = _export(ctx, tenth)
    goal_s = 60.0 * big.n / 1_000_000
    ctx.add(
        Row(
            4,
            "export: batchq results -o FILE",
            f"{big.n:,} in ≤ {goal_s:g} s",
            f"{run.seconds:.1f} s ({big.n / run.seconds:,.0f} results/s)",
            f"raw chunked HMGET {raw_s:.1f} s",
            f"{run.seconds / raw_s:.1f}x",
            verdict(run.seconds <= goal_s),
            {"n": big.n, "seconds": run.seconds, "raw_seconds": raw_s},
            f"{tenth.n:,} results took {run10.seconds:.1f} s",
        )
    )
    py = ctx.py_base()
    rss, rss10 = run.max_rss_mb, run10.max_rss_mb
    ctx.add(
        Row(
            4,
            "export: client peak RSS",
            f"≤ {MAX_CLIENT_RSS_MB:g} MB (bounded)",
            f"{rss:.0f} MB",
            f"{tenth.n:,} results: {rss10:.0f} MB",
            f"{rss / rss10:.2f}x",
            verdict(rss <= MAX_CLIENT_RSS_MB),
            {"max_rss_mb": rss, "tenth_rss_mb": rss10, "import_rss_mb": py.max_rss_mb},
            _rss_note(rss, rss10, big.n, tenth.n, py.max_rss_mb),
        )
    )


def t_queue(ctx: Ctx) -> None:
    q = ctx.queue_run()
    span = makespan_s(q.meta)
    rate, base = q.n / span, q.n / q.baseline_s
    ok = int(q.meta.get("succeeded", 0)) == q.n
    ctx.add(
        Row(
            5,
            "queue: 2 workers x 16, zero-latency sim",
            "≥ 1,000 items/s",
            f"{rate:,.0f} items/s ({q.n:,} in {span:.1f} s)"
            + ("" if ok else f", only {q.meta.get('succeeded')} succeeded"),
            f"gather+Semaphore(32) {base:,.0f}/s",
            f"{rate / base:.2f}x",
            verdict(rate >= 1000 and ok),
            {
                "n": q.n,
                "items_per_s": rate,
                "baseline_items_per_s": base,
                "makespan_s": span,
                "worker_cpu_ms_per_item": q.worker_cpu_s * 1000 / q.n,
                "sim_cpu_ms_per_item": q.sim_cpu_s * 1000 / q.n,
                "baseline_cpu_ms_per_item": q.baseline_cpu_s * 1000 / q.n,
                "baseline_sim_cpu_ms_per_item": q.baseline_sim_cpu_s * 1000 / q.n,
                "valkey_cpu_ms_per_item": q.server_cpu_s * 1000 / q.n,
                "valkey_commands_per_item": q.server_commands / q.n,
            },
            f"CPU per item: workers {q.worker_cpu_s * 1000 / q.n:.1f} ms + simulator "
            f"{q.sim_cpu_s * 1000 / q.n:.1f} ms + Valkey {q.server_cpu_s * 1000 / q.n:.1f} ms"
            f" ({q.server_commands / q.n:.0f} commands/item, in Lua and submit included);"
            " bare loop "
            f"{q.baseline_cpu_s * 1000 / q.n:.1f} ms + simulator "
            f"{q.baseline_sim_cpu_s * 1000 / q.n:.1f} ms (2 cores in all)",
        )
    )


def t_saturation(ctx: Ctx) -> None:
    lab, latency = ctx.lab, 0.2
    for p in (1, 4, 16):
        n = max(2 * p, round(20 * p * ctx.scale))
        ideal = n / p * latency
        prefix = f"sat{p}"
        path = lab.root / f"{prefix}.jsonl"
        write_prompts(path, n)
        # Concurrency P, as a user matches OLLAMA_NUM_PARALLEL; the worker's default Ollama
        # queue (P/4, rounded up) has the next requests waiting in the simulator's queue.
        queue = Settings(concurrency=p).ollama_queue_size
        with Sim(lab.logs / f"sim-{prefix}.log", parallel=p, latency=latency) as sim:
            with lab.workers(prefix, 1, ollama=sim.url, concurrency=p) as workers:
                ctx.log(f"saturation: P={p}, {n} items")
                cpu0 = workers.cpu_s()
                bid, _ = lab.submit(prefix, path)
                meta = lab.wait_done(prefix, bid, timeout=600)
                cpu = workers.cpu_s() - cpu0
            prompts = [prompt_text(i) for i in range(n)]
            seed = asyncio.run(http_loop(sim.url, prompts, concurrency=5, delay=0.1))
            # What the simulator itself allows: the same calls, P at a time, no queue.
            bare = asyncio.run(http_loop(sim.url, prompts, concurrency=p))
        span = makespan_s(meta)
        ctx.add(
            Row(
                6,
                f"saturation: P={p}, N={n}, L=0.2 s",
                f"≤ ideal {ideal:.2f} s +5%",
                f"{span:.2f} s ({span / ideal - 1:+.1%} vs ideal)",
                f"seed loop {seed:.2f} s ({seed / ideal - 1:+.0%})",
                f"{span / seed:.2f}x",
                verdict(span <= ideal * 1.05),
                {
                    "p": p,
                    "n": n,
                    "makespan_s": span,
                    "ideal_s": ideal,
                    "seed_s": seed,
                    "bare_s": bare,
                    "ollama_queue": queue,
                },
                f"worker concurrency {p} with an Ollama queue of {queue};"
                f" {(span - ideal) / (n / p) * 1000:.0f} ms lost per round of P={p} requests;"
                f" worker CPU {cpu * 1000 / n:.1f} ms/item; a bare loop of the same calls, P at"
                f" a time, took {bare:.2f} s ({bare / ideal - 1:+.1%})",
            )
        )


def t_scaling(ctx: Ctx) -> None:
    lab, conc, latency, slots = ctx.lab, 8, 0.2, 64
    n = 400 if ctx.quick else 2000
    rates: dict[int, float] = {}
    bare: dict[int, float] = {}
    cpu: dict[int, float] = {}
    per_worker = Settings(concurrency=conc).max_in_flight
    prompts = [prompt_text(i) for i in range(n)]

    # Each worker has its concurrency in flight plus its default Ollama queue, until the
    # simulator's slots are all busy. Requests of a fixed latency run in whole rounds: 2000
    # items over 64 slots take 32 rounds at best, not 31.25, so the ideal rate is N over whole
    # rounds (with 10, 20 and 40 in flight N divides evenly and this is width / latency).
    def width(k: int) -> int:
        return min(k * per_worker, slots)

    def rounds(k: int) -> int:
        return math.ceil(n / width(k))

    def ideal_rate(k: int) -> float:
        return n / (rounds(k) * latency)

    with Sim(lab.logs / "sim-scaling.log", parallel=slots, latency=latency) as sim:
        for k in (1, 2, 4, 8):
            prefix = f"scale{k}"
            path = lab.root / f"{prefix}.jsonl"
            write_prompts(path, n)
            with lab.workers(prefix, k, ollama=sim.url, concurrency=conc) as workers:
                ctx.log(f"scaling: {k} worker(s) x {conc}, {n} items")
                cpu0, t0 = workers.cpu_s(), time.perf_counter()
                bid, _ = lab.submit(prefix, path)
                meta = lab.wait_done(prefix, bid, timeout=1200)
                cpu[k] = (workers.cpu_s() - cpu0) / (time.perf_counter() - t0)
            rates[k] = n / makespan_s(meta)
            # What the simulator and this machine allow at that width: the same calls from one
            # process, as many at a time as the workers have in flight, no queue.
            bare[k] = n / asyncio.run(http_loop(sim.url, prompts, concurrency=width(k)))
    for k, rate in rates.items():
        ideal = ideal_rate(k)
        ctx.add(
            Row(
                7,
                f"scaling: {k} worker(s) x {conc}, N={n}",
                f"≥ 95% of {ideal:.0f}/s",
                f"{rate:.0f} items/s ({rate / ideal:.1%} of ideal)",
                f"1 worker {rates[1]:.0f}/s",
                f"{rate / rates[1]:.2f}x (ideal {ideal / ideal_rate(1):.2f}x)",
                verdict(rate >= 0.95 * ideal),
                {
                    "workers": k,
                    "items_per_s": rate,
                    "ideal_items_per_s": ideal,
                    "bare_loop_items_per_s": bare[k],
                    "cores": cpu[k],
                },
                f"{k * per_worker} requests in flight for {slots} slots, so at best"
                f" {rounds(k)} rounds of {latency:g} s; workers"
                f" used {cpu[k]:.2f} of the 2 cores while the batch ran; a bare loop of the"
                f" same calls, {width(k)} at a time in one process, ran at"
                f" {bare[k]:.0f}/s ({bare[k] / ideal:.1%} of ideal)",
            )
        )


async def _first_result(ctx: Ctx, prefix: str, n: int) -> tuple[float, float]:
    """Submit an n-item batch in-process; seconds until its first result, and until its end."""
    redis = connect(ctx.lab.url)
    try:
        keys = Keys(prefix)
        store = BatchStore(redis, keys)
        items = [
            Item(str(i), Endpoint.GENERATE, {"model": MODEL, "prompt": prompt_text(i)})
            for i in range(n)
        ]
        t0 = time.perf_counter()
        bid, _ = await store.submit(items, SubmitOptions(name="small"))
        results = keys.batch(bid).results
        while not await redis.hlen(results):  # type: ignore[misc]
            if time.perf_counter() - t0 > 300:
                raise TimeoutError("no result of the small batch within 300 s")
            await asyncio.sleep(0.005)
        first = time.perf_counter() - t0
        while await redis.hget(keys.batch(bid).meta, "finished_at") is None:  # type: ignore[misc]
            if time.perf_counter() - t0 > 600:
                raise TimeoutError("the small batch did not finish within 600 s")
            await asyncio.sleep(0.01)
        return first, time.perf_counter() - t0
    finally:
        await redis.aclose()


async def _cancel(ctx: Ctx, big: BigBatch) -> None:
    redis = connect(ctx.lab.url)
    try:
        await BatchStore(redis, Keys(big.prefix)).cancel(big.batch_id)
    finally:
        await redis.aclose()


def t_dispatch(ctx: Ctx) -> None:
    lab = ctx.lab
    big = ctx.big_batch(200_000 if ctx.quick else 1_000_000)
    with Sim(lab.logs / "sim-dispatch.log", parallel=64, latency=0.0) as sim:
        with lab.workers("fair0", 2, ollama=sim.url, concurrency=16):
            ctx.log("dispatch: 100-item batch, empty queue (baseline)")
            base_first, _ = asyncio.run(_first_result(ctx, "fair0", 100))
        with lab.workers(big.prefix, 2, ollama=sim.url, concurrency=16):
            deadline = time.monotonic() + 120
            while True:  # the big batch is flowing before the small one arrives
                m = lab.meta(big.prefix, big.batch_id)
                if int(m.get("succeeded", 0)) + int(m.get("failed", 0)) >= 200:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("the big batch made no progress")
                time.sleep(0.05)
            ctx.log(f"dispatch: 100-item batch behind the {big.n:,}-item batch")
            first, all_done = asyncio.run(_first_result(ctx, big.prefix, 100))
            asyncio.run(_cancel(ctx, big))
    ctx.add(
        Row(
            8,
            f"dispatch: first result behind {big.n:,}",
            "≤ 5 s",
            f"{first:.2f} s (all 100 in {all_done:.2f} s)",
            f"empty queue {base_first:.2f} s",
            f"{first / base_first:.2f}x",
            verdict(first <= 5.0),
            {"first_s": first, "all_s": all_done, "empty_queue_first_s": base_first},
        )
    )


async def _dispatch_cost(url: str, prefix: str, batches: int, per_batch: int) -> tuple[float, int]:
    """Seconds spent in dispatch calls to send every item of ``batches`` active batches through
    a 32-job window, and the items sent. Between calls the queued jobs are taken out as if
    workers had run them (not timed): what is timed is the dispatcher alone."""
    from batchq.store.dispatch import Dispatcher
    from batchq.store.keys import ARQ_JOB_PREFIX

    redis = await connect(url)
    try:
        keys = Keys(prefix)
        store = BatchStore(redis, keys)
        for b in range(batches):
            items = [
                Item(str(i), Endpoint.GENERATE, {"model": MODEL, "prompt": f"b{b} p{i}"})
                for i in range(per_batch)
            ]
            await store.submit(items, durable=False)
        await redis.zadd(keys.workers, {"bench": 2**53})
        await redis.hset(keys.worker_slots, "bench", "16")
        dispatcher = Dispatcher(store.scripts, Settings(prefix=prefix))
        spent, sent = 0.0, 0
        while True:
            t0 = time.perf_counter()
            out = await dispatcher.run()
            spent += time.perf_counter() - t0
            sent += out.sent
            if out.sent == 0 and out.active_batches == 0:
                return spent, sent
            jobs = await redis.zrange(keys.queue, 0, -1)
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.queue, *jobs)
                pipe.delete(*(ARQ_JOB_PREFIX + j.decode() for j in jobs))
                await pipe.execute()
    finally:
        await redis.aclose()


def t_dispatch_cost(ctx: Ctx) -> None:
    batches, per = ctx.n(10_000), 3
    ctx.log(f"dispatch cost: {batches:,} active batches of {per} items")
    many_s, many_n = asyncio.run(_dispatch_cost(ctx.lab.url, "dmany", batches, per))
    ctx.log(f"dispatch cost: 1 batch of {batches * per:,} items (baseline)")
    one_s, one_n = asyncio.run(_dispatch_cost(ctx.lab.url, "done", 1, batches * per))
    many_ms, one_ms = 1000 * many_s / many_n, 1000 * one_s / one_n
    ctx.add(
        Row(
            8,
            f"dispatch: cost per item, {batches:,} active batches",
            "≤ 1 ms",
            f"{many_ms:.3f} ms ({many_n:,} items)",
            f"1 active batch {one_ms:.3f} ms",
            f"{many_ms / one_ms:.2f}x",
            verdict(many_ms <= 1.0),
            {"ms_per_item": many_ms, "one_batch_ms_per_item": one_ms, "batches": batches},
            "client-side time of the dispatch calls (round trips included), window 32",
        )
    )


# Execution order: the status and dispatch targets need the big batch as submitted; export then
# overwrites its results (a fixture), and the worker targets use prefixes of their own.
TARGETS: dict[str, Callable[[Ctx], None]] = {
    "submit": t_submit,
    "memory": t_memory,
    "status": t_status,
    "dispatch": t_dispatch,
    "dispatch-cost": t_dispatch_cost,
    "export": t_export,
    "queue": t_queue,
    "saturation": t_saturation,
    "scaling": t_scaling,
    "fairness": t_fairness,
    "models": t_models,
    "models-turns": t_models_turns,
    "embed": t_embed,
    "openai-api": t_openai_api,
    "auto": t_auto,
}

NUMBERS = {
    "submit": 1,
    "memory": 2,
    "status": 3,
    "export": 4,
    "queue": 5,
    "saturation": 6,
    "scaling": 7,
    "dispatch": 8,
    "dispatch-cost": 8,
    "fairness": 9,
    "models": 10,
    "models-turns": 10,
    "embed": 12,
    "openai-api": 13,
    "auto": 11,
}

__all__ = ["NUMBERS", "TARGETS"]
