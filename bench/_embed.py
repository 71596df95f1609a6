"""The embeddings target: 10,000 short texts, grouped into shared /api/embed requests
(workers.embed_groups, ``BATCHQ_EMBED_BATCH`` at its default) against one request per item
(``BATCHQ_EMBED_BATCH=1``), one worker at the same concurrency, in the same run; and every
vector identical between the two runs and to the simulator's vector of its text alone.

The simulator plays one embedding model on a GPU, with the costs stated in ``SIM_ARGS``:

- one slot (``--parallel 1``): Ollama loads every embedding model with ``numParallel = 1``
  (``server/sched.go``, ``load``: "Embedding models should always be loaded with parallel=1"),
  so concurrent embed requests queue inside Ollama;
- 10 ms per request whatever its inputs (``--embed-overhead``, the simulator's default): HTTP,
  JSON, scheduling and the batch set-up; one short text a request then runs at ~95 items/s,
  the order of what users report from one client stream (~100 chunks/s);
- 20,000 prompt tokens/s for the inputs (a 137M-parameter model such as nomic-embed-text; an
  8B model evaluates prompts at a few thousand tokens/s on a consumer GPU, a model 50x smaller
  faster still), so 8-word texts cost 0.4 ms each in a batch;
- 768-dimension vectors (nomic-embed-text's).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
from _fixtures import Ctx, Row, verdict
from _harness import Lab, answers, batchq_cmd, free_port, proc_cpu_s

from batchq.settings import Settings
from batchq.sim.process import expected_embedding
from batchq.store.codec import decode_result
from batchq.store.keys import Keys

__all__ = ["t_embed"]

EMBED_MODEL = "nomic-embed-text"
DIM = 768
SIM_ARGS = (
    "--parallel",
    "1",
    "--embed-overhead",
    "0.01",
    "--prompt-tokens-per-s",
    "20000",
    "--latency",
    "0",
    "--embed-dim",
    str(DIM),
)
CONCURRENCY = 4  # batchq's default, the same for both runs


def text(i: int) -> str:
    return f"short text number {i} about nothing in particular"  # 8 words, 8 sim tokens


@dataclass
class Run:
    items_per_s: float
    requests: int
    batch_id: str
    cpu: dict[str, float]  # CPU seconds of the worker, the simulator and Valkey, per 1,000 items


@contextlib.contextmanager
def embed_sim(lab: Lab) -> Iterator[tuple[str, int]]:
    """The simulator; yields its URL and pid."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (lab.logs / "sim-embed.log").open("ab") as log:
        proc = subprocess.Popen(
            batchq_cmd("sim", "--port", str(port), *SIM_ARGS), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        if not answers(f"{url}/api/version"):
            raise RuntimeError(f"simulator did not start; see {lab.logs}")
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def run(ctx: Ctx, sim: tuple[str, int], n: int, embed_batch: int) -> Run:
    """One batch of ``n`` texts through one worker."""
    url, sim_pid = sim
    lab, prefix = ctx.lab, f"embed{embed_batch}"
    path = lab.root / f"{prefix}.jsonl"
    lines = ({"custom_id": f"t{i}", "input": text(i)} for i in range(n))
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    extra = {"BATCHQ_EMBED_BATCH": str(embed_batch)}
    with lab.workers(prefix, 1, ollama=url, concurrency=CONCURRENCY, extra_env=extra) as workers:
        embeds0 = httpx.get(f"{url}/_sim/stats", timeout=30).json()["embeds"]
        cpu0 = (workers.cpu_s(), proc_cpu_s(sim_pid), lab.server_counters()[0])
        cmd = batchq_cmd("submit", str(path), "--model", EMBED_MODEL, "--json")
        env = lab.env(prefix)
        sub = subprocess.run(cmd, env=env, capture_output=True, check=True, text=True)
        bid = str(json.loads(sub.stdout)["batch_id"])
        meta = lab.wait_done(prefix, bid, timeout=1800)
        cpu1 = (workers.cpu_s(), proc_cpu_s(sim_pid), lab.server_counters()[0])
        embeds = httpx.get(f"{url}/_sim/stats", timeout=30).json()["embeds"] - embeds0
    names = ("worker", "sim", "valkey")
    cpu = {k: (b - a) * 1000 / n for k, a, b in zip(names, cpu0, cpu1, strict=True)}
    # From the first item's start to the last one's end, as the batch records them.
    seconds = (int(meta["finished_at"]) - int(meta["started_at"])) / 1000
    if int(meta.get("succeeded", 0)) != n:
        raise RuntimeError(f"{prefix}: {meta.get('succeeded')} of {n} succeeded")
    return Run(n / seconds, embeds, bid, cpu)


def vectors(lab: Lab, prefix: str, bid: str, n: int) -> list[Any]:
    raw = cast(dict[bytes, bytes], lab.r.hgetall(Keys(prefix).batch(bid).results))
    return [decode_result(i, None, raw.get(str(i).encode())).embeddings for i in range(n)]


def t_embed(ctx: Ctx) -> None:
    n = ctx.n(10_000)
    group = Settings.model_fields["embed_batch"].default
    with embed_sim(ctx.lab) as sim:
        ctx.log(f"embed: {n:,} texts one request per item, 1 worker x {CONCURRENCY}")
        base = run(ctx, sim, n, 1)
        ctx.log(f"embed: the same texts grouped (BATCHQ_EMBED_BATCH={group})")
        got = run(ctx, sim, n, group)
    ctx.log("embed: comparing vectors")
    alone = vectors(ctx.lab, "embed1", base.batch_id, n)
    grouped = vectors(ctx.lab, f"embed{group}", got.batch_id, n)
    same = sum(a == g for a, g in zip(alone, grouped, strict=True))
    expected = sum(
        g == [expected_embedding(EMBED_MODEL, text(i), dim=DIM)] for i, g in enumerate(grouped)
    )
    rate, ratio = got.items_per_s, got.items_per_s / base.items_per_s
    ok = ratio >= 5 and same == n and expected == n

    def cpu(r: Run) -> str:
        return ", ".join(f"{k} {v:.2f}" for k, v in r.cpu.items())

    ctx.add(
        Row(
            12,
            f"embeddings: {n:,} short texts, 1 worker x {CONCURRENCY}",
            "≥ 5x one request per item; identical vectors",
            f"{rate:,.0f} items/s in {got.requests:,} requests; {same:,}/{n:,} vectors identical",
            f"{base.items_per_s:,.0f} items/s in {base.requests:,} requests",
            f"{ratio:.1f}x",
            verdict(ok),
            {
                "items_per_s": rate,
                "baseline_items_per_s": base.items_per_s,
                "requests": got.requests,
                "baseline_requests": base.requests,
                "cpu_s_per_1000": got.cpu,
                "baseline_cpu_s_per_1000": base.cpu,
                "identical": same,
                "as_expected": expected,
                "embed_batch": group,
            },
            f"sim {' '.join(SIM_ARGS)}; {expected:,}/{n:,} equal to the text's vector alone; "
            f"CPU s per 1,000 items grouped: {cpu(got)}; alone: {cpu(base)}",
        )
    )
