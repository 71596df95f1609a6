"""The OpenAI API target (issue 14): a file of OpenAI chat lines (1M at full scale, ~500 B of
prompt each) uploaded with ``client.files.create`` and made a batch with ``batches.create``,
through a live ``batchq serve``, against ``batchq submit`` of the same file in the same run;
the peak RSS of the ``serve`` process; ``batches.retrieve`` of that batch; and its output file
(written by ``serve`` once the batch is done, then downloaded) against ``batchq results
--format openai``.

The results are written by the benchmark fixture of the export target
(:func:`_fixtures.fill_results`), not by workers: what is measured is the API, not inference.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from _fixtures import BigBatch, Ctx, Row, fill_results, verdict
from _harness import MODEL, Lab, answers, batchq_cmd, free_port, prompt_text, run_child
from openai import OpenAI

__all__ = ["t_openai_api"]

KEY = "sk-bench-" + secrets.token_hex(8)


def write_openai_lines(path: Path, n: int) -> int:
    """``n`` OpenAI chat lines; returns the file's size."""
    with path.open("w", encoding="utf-8") as f:
        buf: list[str] = []
        for i in range(n):
            body = {"model": MODEL, "messages": [{"role": "user", "content": prompt_text(i)}]}
            line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
            buf.append(json.dumps(line | {"body": body}))
            if len(buf) >= 10_000:
                f.write("\n".join(buf) + "\n")
                buf = []
        if buf:
            f.write("\n".join(buf) + "\n")
    return path.stat().st_size


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def serving(lab: Lab, prefix: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = lab.env(prefix) | {"BATCHQ_API_KEYS": KEY}
    with (lab.logs / f"{prefix}-serve.log").open("ab") as log:
        proc = subprocess.Popen(
            batchq_cmd("serve", "--port", str(port)),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        if not answers(f"{url}/api/status", tries=600):
            raise RuntimeError(f"batchq serve did not start; see {lab.logs}")
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def t_openai_api(ctx: Ctx) -> None:
    lab = ctx.lab
    n = ctx.n(1_000_000)
    path = lab.root / "openai-api.jsonl"
    ctx.log(f"writing {n:,} OpenAI chat lines")
    size = write_openai_lines(path, n)
    lab.quiesce()
    ctx.log("baseline: batchq submit of the same file")
    sub = run_child(batchq_cmd("submit", str(path), "--json"), lab.env("apisub")).check("submit")
    lab.quiesce()
    with (
        serving(lab, "api") as (url, pid),
        OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=3600) as client,
    ):
        ctx.log("files.create + batches.create through batchq serve")
        t0 = time.perf_counter()
        with path.open("rb") as f:
            upload = client.files.create(file=f, purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        api_s = time.perf_counter() - t0
        rss = peak_rss_mb(pid)
        if batch.status != "in_progress":
            raise RuntimeError(f"the batch is {batch.status}: {batch.errors}")
        native = str((batch.model_extra or {})["batchq_batch_id"])
        times = []
        for _ in range(21):
            t1 = time.perf_counter()
            client.batches.retrieve(batch.id)
            times.append(time.perf_counter() - t1)
        retrieve_ms = statistics.median(times) * 1000
        ctx.log("results written by the fixture; the output file, then batchq results")
        fill_results(lab, BigBatch("api", native, n, 0, sub, 0))
        lab.quiesce()
        t2 = time.perf_counter()
        while (done := client.batches.retrieve(batch.id)).status != "completed":
            time.sleep(0.05)
        final_s = time.perf_counter() - t2
        assert done.output_file_id
        out = lab.root / "api-output.jsonl"
        t3 = time.perf_counter()
        with client.files.with_streaming_response.content(done.output_file_id) as r:
            r.stream_to_file(out)
        download_s = time.perf_counter() - t3
        rss = max(rss, peak_rss_mb(pid))
    lines = sum(1 for _ in out.open("rb"))
    if lines != n:
        raise RuntimeError(f"the output file has {lines} lines, not {n}")
    res = run_child(
        batchq_cmd("results", native, "--format", "openai", "-o", str(lab.root / "cli.jsonl")),
        lab.env("api"),
    ).check("batchq results")
    path.unlink()
    for p in (out, lab.root / "cli.jsonl"):
        os.unlink(p)
    ratio = api_s / sub.seconds
    ctx.add(
        Row(
            13,
            "openai-upload",
            "upload + create ≤ 2x submit",
            f"{api_s:.1f} s ({size / 1e6:.0f} MB, {n:,} lines)",
            f"submit {sub.seconds:.1f} s",
            f"{ratio:.2f}x",
            verdict(ratio <= 2),
            {"api_s": api_s, "submit_s": sub.seconds, "bytes": size, "n": n},
        )
    )
    ctx.add(
        Row(
            13,
            "openai-rss",
            "serve peak RSS ≤ 300 MB",
            f"{rss:.0f} MB",
            "",
            "",
            verdict(rss <= 300),
            {"rss_mb": rss},
        )
    )
    ctx.add(
        Row(
            13,
            "openai-retrieve",
            "batches.retrieve ≤ 50 ms",
            f"{retrieve_ms:.1f} ms (median of 21)",
            "",
            "",
            verdict(retrieve_ms <= 50),
            {"retrieve_ms": retrieve_ms},
        )
    )
    total = final_s + download_s
    ratio = total / res.seconds
    ctx.add(
        Row(
            13,
            "openai-download",
            "output file ≤ 1.5x batchq results",
            f"{total:.1f} s (writing {final_s:.1f} s + download {download_s:.1f} s)",
            f"results {res.seconds:.1f} s",
            f"{ratio:.2f}x",
            verdict(ratio <= 1.5),
            {"finalize_s": final_s, "download_s": download_s, "results_s": res.seconds},
            note="the output file is written once, on the first read of the finished batch; "
            "later downloads cost the download alone",
        )
    )
