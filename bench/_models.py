"""The model-swap targets (issue 13): on a simulated GPU that holds one model at a time and
pays 2-5 s to load one, batchq's makespan against an oracle that sends the same items grouped by
model, measured in the same run on a fresh simulator of the same settings.

- ``models``: one file whose lines alternate three models, and three batches of three models
  submitted together (1 host, P=4): makespan ≤ 1.10x the oracle, model loads ≤ models + hosts.
- ``models-turns``: two batches of two models submitted together, runs longer than the switch
  bound: makespan ≤ 1.15x the oracle, both making progress, neither waiting past the bound.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from _fixtures import Ctx, Row, verdict
from _harness import Sim, batchq_cmd, run_child

from batchq.backends.ollama import OllamaClient
from batchq.records import Endpoint, Item

__all__ = ["t_models", "t_models_turns"]

PARALLEL = 4
LATENCY = 0.2
LOADS = {"m1": 2.0, "m2": 3.5, "m3": 5.0}


def _sim_args(models: Sequence[str]) -> list[str]:
    loads = ",".join(f"{m}={LOADS[m]}" for m in models)
    return ["--models", ",".join(models), "--max-loaded", "1", "--model-load-seconds", loads]


def _prompts(model: str, n: int) -> list[str]:
    return [f"{model} {i}" for i in range(n)]


async def _oracle(url: str, batches: dict[str, int]) -> float:
    """The same items, one model after another, P at a time: one load per model."""
    async with OllamaClient(url, timeout=120, max_connections=PARALLEL) as client:
        sem = asyncio.Semaphore(PARALLEL)

        async def one(model: str, prompt: str) -> None:
            async with sem:
                await client.send(Item("0", Endpoint.GENERATE, {"model": model, "prompt": prompt}))

        t0 = time.perf_counter()
        for model, n in batches.items():
            await asyncio.gather(*(one(model, p) for p in _prompts(model, n)))
        return time.perf_counter() - t0


def _submit(ctx: Ctx, prefix: str, path: Path, *options: str) -> str:
    cmd = batchq_cmd("submit", str(path), "--json", *options)
    run = run_child(cmd, ctx.lab.env(prefix)).check("batchq submit")
    return str(json.loads(run.stdout)["batch_id"])


def _run(
    ctx: Ctx,
    tag: str,
    batches: dict[str, int],
    *,
    workers: int,
    switch_after: float,
    mixed: bool = False,
) -> tuple[float, float, dict[str, Any]]:
    """batchq's makespan (first start to last finish, from the batches' own times), the
    oracle's, and the simulator's counters of batchq's run. ``mixed``: one file whose lines
    take the models in turn, instead of a batch per model."""
    lab, prefix = ctx.lab, f"models-{tag}"
    models = list(batches)
    with Sim(
        lab.logs / f"sim-{tag}.log", parallel=PARALLEL, latency=LATENCY, extra=_sim_args(models)
    ) as sim:
        ids = []
        if mixed:
            path = lab.root / f"{tag}.jsonl"
            lines = itertools.chain.from_iterable(
                zip(*(_prompts(m, n) for m, n in batches.items()), strict=True)
            )
            path.write_text(
                "".join(json.dumps({"model": p.split(" ")[0], "prompt": p}) + "\n" for p in lines)
            )
            ids.append(_submit(ctx, prefix, path))
        for model, n in batches.items() if not mixed else ():
            path = lab.root / f"{tag}-{model}.jsonl"
            path.write_text("".join(json.dumps(p) + "\n" for p in _prompts(model, n)))
            ids.append(_submit(ctx, prefix, path, "--model", model))
        env = {"BATCHQ_MODEL_SWITCH_AFTER": str(switch_after)}
        concurrency = PARALLEL // workers
        with lab.workers(prefix, workers, ollama=sim.url, concurrency=concurrency, extra_env=env):
            metas = [lab.wait_done(prefix, bid, timeout=1800) for bid in ids]
        stats = httpx.get(f"{sim.url}/_sim/stats", timeout=30).json()
    start = min(int(m["started_at"]) for m in metas)
    end = max(int(m["finished_at"]) for m in metas)
    failed = sum(int(m["failed"]) for m in metas)
    if failed:
        raise RuntimeError(f"{failed} items failed; see {lab.logs}")
    with Sim(
        lab.logs / f"sim-{tag}-oracle.log",
        parallel=PARALLEL,
        latency=LATENCY,
        extra=_sim_args(models),
    ) as sim:
        oracle = asyncio.run(_oracle(sim.url, batches))
    return (end - start) / 1000, oracle, stats


def t_models(ctx: Ctx) -> None:
    n = 80 if not ctx.quick else 40
    batches = dict.fromkeys(LOADS, n)
    ctx.log(f"models: {3 * n} items alternating 3 models in one file, 1 host P={PARALLEL}")
    _models_row(ctx, "mixed", batches, mixed=True, what=f"{3 * n} items alternating 3 models")
    n = 160 if not ctx.quick else 40
    batches = dict.fromkeys(LOADS, n)
    ctx.log(f"models: 3 batches x {n} items of 3 models, 1 host P={PARALLEL}")
    _models_row(ctx, "three", batches, mixed=False, what=f"3 batches of 3 models x {n} items")


def _models_row(ctx: Ctx, tag: str, batches: dict[str, int], *, mixed: bool, what: str) -> None:
    took, oracle, stats = _run(ctx, tag, batches, workers=2, switch_after=120.0, mixed=mixed)
    loads = sum(int(v) for v in stats["loads"].values())
    ratio = took / oracle
    ctx.add(
        Row(
            10,
            f"models: {what}, one resident, loads 2-5 s, P={PARALLEL}",
            "≤ 1.10x oracle; loads ≤ 4",
            f"{took:.1f} s, {loads} loads",
            f"grouped by model {oracle:.1f} s, 3 loads",
            f"{ratio:.3f}x",
            verdict(ratio <= 1.10 and loads <= 4),
            {"makespan_s": took, "oracle_s": oracle, "loads": loads},
            f"2 workers x {PARALLEL // 2}, {LATENCY} s a request; loads per model {stats['loads']}",
        )
    )


def _longest_wait(stats: dict[str, Any], models: Sequence[str]) -> tuple[float, dict[str, int]]:
    """The longest gap between two requests of one model while it still had requests to come
    (its waits while another model had the host), and the requests each model got in the
    first third of the run (both make progress)."""
    arrivals = list(zip(stats["arrivals"], stats["arrival_prompts"], strict=True))
    worst = 0.0
    for model in models:
        times = sorted(t for t, p in arrivals if p.split(" ", 1)[0] == model)
        worst = max([worst, *(b - a for a, b in itertools.pairwise(times))])
    t0 = min(t for t, _ in arrivals)
    t1 = t0 + (max(t for t, _ in arrivals) - t0) / 3
    early = {m: sum(1 for t, p in arrivals if t <= t1 and p.startswith(m + " ")) for m in models}
    return worst, early


def t_models_turns(ctx: Ctx) -> None:
    bound = 30.0 if not ctx.quick else 10.0
    n = 900 if not ctx.quick else 300
    batches = {"m1": n, "m2": n}
    ctx.log(f"models-turns: 2 batches x {n} items of 2 models, switch bound {bound:g} s")
    took, oracle, stats = _run(ctx, "turns", batches, workers=2, switch_after=bound)
    worst, early = _longest_wait(stats, list(batches))
    ratio = took / oracle
    # A model waits the bound, then its host finishes the requests in flight and loads it.
    allowed = bound + max(LOADS.values()) + 2 * LATENCY + 1.0
    ok = ratio <= 1.15 and worst <= allowed and all(early.values())
    ctx.add(
        Row(
            10,
            f"models: 2 batches of 2 models together, bound {bound:g} s",
            f"≤ 1.15x oracle; both progress; wait ≤ bound + load ({allowed:g} s)",
            f"{took:.1f} s; longest wait {worst:.1f} s; first third {early}",
            f"grouped by model {oracle:.1f} s",
            f"{ratio:.3f}x",
            verdict(ok),
            {"makespan_s": took, "oracle_s": oracle, "longest_wait_s": worst, **early},
            f"loads per model {stats['loads']}",
        )
    )
