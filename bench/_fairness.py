"""The fairness target: equal-weight batches get equal shares of the dispatch over a minute,
and a weight-2 batch twice a weight-1 one's (stride scheduling, batchq.store.stride)."""

from __future__ import annotations

import json
import time
from collections import Counter

import httpx
from _fixtures import Ctx, Row, verdict
from _harness import MODEL, Sim, batchq_cmd, run_child

from batchq.store.stride import jain_index

__all__ = ["t_fairness"]

WARMUP_S = 5.0
WINDOW_S = 60.0
SLICE_S = 10.0  # Jain's index is also reported for the worst 10 s slice of the minute


def t_fairness(ctx: Ctx) -> None:
    lab, prefix = ctx.lab, "fair"
    window = WINDOW_S if not ctx.quick else 20.0
    # 2 workers x 4 slots, 0.1 s a request: ~80 items/s for four batches to share.
    sizes = {"a": 8000, "b": 8000, "c": 8000, "heavy": 16000}
    with Sim(lab.logs / "sim-fair.log", parallel=16, latency=0.1) as sim:
        ids = []
        for tag, n in sizes.items():
            path = lab.root / f"fair-{tag}.jsonl"
            path.write_text("".join(json.dumps(f"{tag} {i}") + "\n" for i in range(n)))
            weight = "2" if tag == "heavy" else "1"
            cmd = batchq_cmd("submit", str(path), "--model", MODEL, "--json", "--weight", weight)
            run = run_child(cmd, lab.env(prefix)).check("batchq submit")
            ids.append(str(json.loads(run.stdout)["batch_id"]))
        ctx.log(f"fairness: 3 batches of weight 1 and one of weight 2, {window:g} s counted")
        with lab.workers(prefix, 2, ollama=sim.url, concurrency=4):
            start = time.time() + WARMUP_S
            time.sleep(WARMUP_S + window + 0.5)
            stats = httpx.get(f"{sim.url}/_sim/stats", timeout=30).json()
            for bid in ids:
                run_child(batchq_cmd("cancel", bid), lab.env(prefix)).check("batchq cancel")
    seen = [
        (t, p.split(" ", 1)[0])
        for t, p in zip(stats["arrivals"], stats["arrival_prompts"], strict=True)
    ]
    got = Counter(tag for t, tag in seen if start <= t < start + window)
    equal = [got[t] for t in ("a", "b", "c")]
    jain = jain_index(equal)
    worst = min(
        jain_index([c[t] for t in ("a", "b", "c")])
        for s in range(int(window // SLICE_S))
        if (c := Counter(tag for t, tag in seen if 0 <= t - start - s * SLICE_S < SLICE_S))
    )
    ratio = got["heavy"] / (sum(equal) / 3)
    ctx.add(
        Row(
            9,
            f"fairness: 3 equal batches + 1 of weight 2, {window:g} s",
            "Jain ≥ 0.99; weight 2 → 2x ±10 %",
            f"Jain {jain:.4f} (worst {SLICE_S:g} s: {worst:.4f}); weight-2 ratio {ratio:.2f}",
            "ideal 1.0000; 2.00",
            f"{jain:.4f}",
            verdict(jain >= 0.99 and 1.8 <= ratio <= 2.2),
            {"jain": jain, "worst_slice_jain": worst, "weight2_ratio": ratio, **got},
            f"items started at the simulator per batch: {dict(got)}; 2 workers x 4, 0.1 s each",
        )
    )
