"""Measure a whole batch through real worker processes, the embedded Valkey and the simulator.

    .venv/bin/python bench/run_batch.py --items 10000 --workers 2 --concurrency 16

Prints wall time, items/s and Redis memory, and the same HTTP calls made by a bare in-process
``asyncio`` loop with the same total concurrency (the baseline, measured in the same run), and
the ratio between them. Nothing here asserts a time: it reports (``bench/bench.py`` checks the
project's targets).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from _harness import Lab, Sim, http_loop, prompt_text, write_prompts

PREFIX = "bench"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--parallel", type=int, default=64, help="simulator slots")
    ap.add_argument("--latency", type=float, default=0.0, help="simulator seconds per request")
    ap.add_argument("--prompt-bytes", type=int, default=200)
    args = ap.parse_args()

    n = args.items
    lab = Lab(Path(tempfile.mkdtemp(prefix="batchq-bench-")))
    try:
        src = lab.root / "prompts.jsonl"
        prompt_bytes = write_prompts(src, n, args.prompt_bytes)
        with Sim(lab.logs / "sim.log", parallel=args.parallel, latency=args.latency) as sim:
            mem0 = lab.used_memory()
            bid, submit = lab.submit(PREFIX, src)
            mem_queued = lab.used_memory()

            t0 = time.perf_counter()
            with lab.workers(PREFIX, args.workers, ollama=sim.url, concurrency=args.concurrency):
                counts = lab.wait_done(PREFIX, bid, timeout=3600)
                run_s = time.perf_counter() - t0
            mem_done = lab.used_memory()

            prompts = [prompt_text(i, args.prompt_bytes) for i in range(n)]
            concurrency = args.workers * args.concurrency
            base_s = asyncio.run(http_loop(sim.url, prompts, concurrency=concurrency))
    finally:
        lab.close()

    print(
        f"batch of {n} items, {args.workers} workers x {args.concurrency}, simulator "
        f"{args.parallel} slots, latency {args.latency} s, prompts ~{args.prompt_bytes} B"
    )
    print(f"  succeeded {counts['succeeded']}  failed {counts['failed']}")
    print(f"  submit            {submit.seconds:8.2f} s   {n / submit.seconds:10.0f} items/s")
    print(f"  process (batchq)  {run_s:8.2f} s   {n / run_s:10.0f} items/s  (with start-up)")
    print(f"  baseline (gather) {base_s:8.2f} s   {n / base_s:10.0f} items/s")
    print(f"  ratio batchq/baseline throughput: {base_s / run_s:.2f}")
    print(
        f"  Redis memory: {(mem_queued - mem0 - prompt_bytes) / n:.0f} B/item queued, "
        f"{(mem_done - mem0 - prompt_bytes) / n:.0f} B/item done (prompt text excluded)"
    )


if __name__ == "__main__":
    main()
