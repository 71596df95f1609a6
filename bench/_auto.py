"""The auto-concurrency target (issue 13): workers at their defaults (``--concurrency auto``)
against a simulator whose slots (P) they are not told.

For each (P, workers): throughput in steady state >= 95 % of P / latency (the simulator's
requests take exactly ``latency`` seconds, so P / latency is what P slots can serve), at most one
request per host waiting inside the simulator on average (its ``waited_seconds`` counter, the
time-integral of the requests admitted and not yet given a slot), and no 503. Then the server
restarts with another P on the same port: the time until a window again meets both the
throughput and the waiting bound (target: within 60 s).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import httpx
from _fixtures import Ctx, Row, verdict
from _harness import MODEL, Sim, batchq_cmd, run_child

__all__ = ["t_auto"]

LATENCY = 0.25  # seconds a request takes at the simulator, whatever else shares it
# (P, workers): the whole grid at full scale, a reduced one with --quick.
FULL_GRID = [(p, w) for p in (1, 2, 4, 8, 16) for w in (1, 2, 4, 8)]
QUICK_GRID = [(1, 1), (1, 4), (4, 1), (4, 4), (16, 1), (16, 4)]
RESTARTS = [(4, 16, 4), (16, 4, 4)]  # (P before, P after, workers)
RESTART_WINDOW_S = 5.0
RESTART_BOUND_S = 60.0


def _stats(url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{url}/_sim/stats", timeout=30).json()
    return stats


def _window(a: dict[str, Any], b: dict[str, Any], seconds: float) -> tuple[float, float, int]:
    """Replies per second, requests waiting on average, and 503s between two readings."""
    # Inference replies only: the workers' /api/ps reads are 200s too (0.2/s a worker).
    ok = b["answered"] - a["answered"]
    waited = b["waited_seconds"] - a["waited_seconds"]
    busy = b["by_status"].get("503", 0) - a["by_status"].get("503", 0)
    return ok / seconds, waited / seconds, busy


def _submit(ctx: Ctx, prefix: str, n: int, tag: str) -> str:
    path = ctx.lab.root / f"auto-{tag}.jsonl"
    path.write_text("".join(json.dumps(f"{tag} {i}") + "\n" for i in range(n)))
    cmd = batchq_cmd("submit", str(path), "--model", MODEL, "--json")
    run = run_child(cmd, ctx.lab.env(prefix)).check("batchq submit")
    return str(json.loads(run.stdout)["batch_id"])


def _cancel(ctx: Ctx, prefix: str, bid: str) -> None:
    run_child(batchq_cmd("cancel", bid), ctx.lab.env(prefix)).check("batchq cancel")


def _steady(ctx: Ctx, parallel: int, workers: int, warm: float, measure: float) -> None:
    lab, prefix = ctx.lab, f"auto-p{parallel}-w{workers}"
    ideal = parallel / LATENCY
    n = math.ceil(ideal * (warm + measure) * 1.5) + 100
    with Sim(lab.logs / f"sim-{prefix}.log", parallel=parallel, latency=LATENCY) as sim:
        bid = _submit(ctx, prefix, n, prefix)
        with lab.workers(prefix, workers, ollama=sim.url, concurrency="auto"):
            time.sleep(warm)
            a, t0 = _stats(sim.url), time.monotonic()
            time.sleep(measure)
            b, t1 = _stats(sim.url), time.monotonic()
            _cancel(ctx, prefix, bid)
    rate, waiting, busy = _window(a, b, t1 - t0)
    ok = rate >= 0.95 * ideal and waiting <= 1.0 and busy == 0
    ctx.add(
        Row(
            11,
            f"auto: P={parallel}, {workers} worker(s), {measure:g} s after {warm:g} s",
            ">= 95 % of P/latency; <= 1 waiting; 0 x 503",
            f"{rate:.2f}/s; {waiting:.2f} waiting; {busy} x 503",
            f"{ideal:.2f}/s (P / {LATENCY:g} s)",
            f"{rate / ideal:.3f}",
            verdict(ok),
            data={"rate": rate, "ideal": ideal, "waiting": waiting, "busy": busy},
        )
    )


def _restart(ctx: Ctx, before: int, after: int, workers: int, warm: float) -> None:
    lab, prefix = ctx.lab, f"auto-r{before}-{after}"
    ideal = after / LATENCY
    n = math.ceil(max(before, after) / LATENCY * (warm + RESTART_BOUND_S + 10) * 1.5)
    first = Sim(lab.logs / f"sim-{prefix}-a.log", parallel=before, latency=LATENCY)
    with first:
        bid = _submit(ctx, prefix, n, prefix)
        with lab.workers(prefix, workers, ollama=first.url, concurrency="auto"):
            time.sleep(warm)
            first.__exit__()
            first.proc = None
            second = Sim(lab.logs / f"sim-{prefix}-b.log", parallel=after, latency=LATENCY)
            second.port, second.url = first.port, first.url
            with second:
                t_up = time.monotonic()
                windows: list[tuple[float, float, float]] = []  # (end, rate, waiting)
                recovered: float | None = None
                a, ta = _stats(second.url), time.monotonic()
                while time.monotonic() - t_up < RESTART_BOUND_S + RESTART_WINDOW_S:
                    time.sleep(RESTART_WINDOW_S)
                    b, tb = _stats(second.url), time.monotonic()
                    rate, waiting, _ = _window(a, b, tb - ta)
                    windows.append((tb - t_up, rate, waiting))
                    if rate >= 0.95 * ideal and waiting <= 1.0:
                        recovered = tb - t_up
                        break
                    a, ta = b, tb
            _cancel(ctx, prefix, bid)
    shown = "never" if recovered is None else f"{recovered:.0f} s"
    last = windows[-1] if windows else (0.0, 0.0, 0.0)
    ctx.add(
        Row(
            11,
            f"auto: restart P={before} -> P={after}, {workers} workers",
            f"a {RESTART_WINDOW_S:g} s window >= 95 % and <= 1 waiting within "
            f"{RESTART_BOUND_S:g} s",
            f"{shown} (then {last[1]:.2f}/s, {last[2]:.2f} waiting)",
            f"{ideal:.2f}/s",
            f"{last[1] / ideal:.3f}",
            verdict(recovered is not None and recovered <= RESTART_BOUND_S),
            data={"windows": windows},
            note="; ".join(f"{t:.0f} s: {r:.1f}/s, {w:.2f} waiting" for t, r, w in windows),
        )
    )


def t_auto(ctx: Ctx) -> None:
    warm, measure = (10.0, 10.0) if ctx.quick else (12.0, 15.0)
    for parallel, workers in QUICK_GRID if ctx.quick else FULL_GRID:
        _steady(ctx, parallel, workers, warm, measure)
    for before, after, workers in RESTARTS:
        _restart(ctx, before, after, workers, warm)
