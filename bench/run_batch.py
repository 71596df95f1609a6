"""Measure a whole batch through real worker processes, the embedded Valkey and the simulator.

    .venv/bin/python bench/run_batch.py --items 10000 --workers 2 --concurrency 16

Prints wall time, items/s and Redis memory, and the same HTTP calls made by a bare in-process
``asyncio`` loop with the same total concurrency (the baseline, measured in the same run), and
the ratio between them. Nothing here asserts a time: it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from batchq.embedded import EmbeddedServer


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sim(port: int, parallel: int, latency: float) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchq",
            "sim",
            "--port",
            str(port),
            "--parallel",
            str(parallel),
            "--eval-tokens-per-s",
            "0",
            "--prompt-tokens-per-s",
            "0",
            "--latency",
            str(latency),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/version", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("simulator did not start")


async def baseline(url: str, n: int, concurrency: int) -> float:
    """The same requests with nothing in between: a semaphore around httpx calls."""
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def one(i: int) -> None:
            async with (
                sem,
                client.stream(
                    "POST",
                    "/api/generate",
                    json={"model": "llama3.2", "prompt": f"prompt {i}", "stream": True},
                ) as r,
            ):
                async for _ in r.aiter_lines():
                    pass

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--parallel", type=int, default=64, help="simulator slots")
    ap.add_argument("--latency", type=float, default=0.0, help="simulator seconds per request")
    ap.add_argument("--prompt-bytes", type=int, default=200)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="batchq-bench-"))
    server = EmbeddedServer(tmp / "home")
    url = server.ensure()
    port = free_port()
    sim = start_sim(port, args.parallel, args.latency)
    sim_url = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        BATCHQ_REDIS_URL=url,
        OLLAMA_HOST=sim_url,
        BATCHQ_HOME=str(tmp / "home"),
        BATCHQ_CONCURRENCY=str(args.concurrency),
        BATCHQ_PREFIX="bench",
    )
    r = redis.Redis.from_url(url)
    try:
        pad = "x" * max(args.prompt_bytes - 20, 0)
        src = tmp / "prompts.jsonl"
        with src.open("w") as f:
            for i in range(args.items):
                f.write(json.dumps(f"prompt {i} {pad}") + "\n")
        mem0 = int(r.info("memory")["used_memory"])
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "batchq", "submit", str(src), "--model", "llama3.2", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        submit_s = time.perf_counter() - t0
        bid = json.loads(out.stdout)["batch_id"]
        mem_queued = int(r.info("memory")["used_memory"])

        t0 = time.perf_counter()
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "batchq", "worker"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(args.workers)
        ]
        meta = f"bench:b:{bid}"
        while r.hget(meta, "finished_at") is None:
            time.sleep(0.05)
        run_s = time.perf_counter() - t0
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
        counts = {k.decode(): v.decode() for k, v in r.hgetall(meta).items()}
        mem_done = int(r.info("memory")["used_memory"])

        base_s = asyncio.run(baseline(sim_url, args.items, args.workers * args.concurrency))
    finally:
        sim.terminate()
        sim.wait(10)
        r.close()
        server.stop()

    n = args.items
    print(
        f"batch of {n} items, {args.workers} workers x {args.concurrency}, simulator "
        f"{args.parallel} slots, latency {args.latency} s, prompts ~{args.prompt_bytes} B"
    )
    print(f"  succeeded {counts['succeeded']}  failed {counts['failed']}")
    print(f"  submit            {submit_s:8.2f} s   {n / submit_s:10.0f} items/s")
    print(f"  process (batchq)  {run_s:8.2f} s   {n / run_s:10.0f} items/s  (with start-up)")
    print(f"  baseline (gather) {base_s:8.2f} s   {n / base_s:10.0f} items/s")
    print(f"  ratio batchq/baseline throughput: {base_s / run_s:.2f}")
    print(
        f"  Redis memory: {(mem_queued - mem0) / n:.0f} B/item queued, "
        f"{(mem_done - mem0) / n:.0f} B/item done (prompt text included)"
    )


if __name__ == "__main__":
    main()
