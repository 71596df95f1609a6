"""A worker facing replies that never end: its peak memory, against the same worker's on short
replies, and how every item ends.

    .venv/bin/python bench/runaway.py --items 64 --concurrency 16

One real worker process (the default reply bounds unless ``--max-chars`` etc. are given)
against the hostile Ollama stand-in (``tests/hostile_ollama.py``, its own process): first a
batch of short normal replies (the baseline), then a batch whose every reply streams forever,
as fast as the worker reads (``--mode runaway``; ``endless_line`` sends one line without end,
``trickle`` a chunk every 0.2 s for the deadline). Prints the worker's peak RSS (VmHWM) after
each, their ratio, whether the peak stays under 300 MB, how every item ended, and the memory
the default caps allow at this concurrency. Exits 1 if the peak is over 300 MB or an item did
not end with the breach's error.type.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from _harness import PY, Lab, batchq_cmd, free_port, run_child

from batchq.settings import Settings

ROOT = Path(__file__).parents[1]
PREFIX = "runaway"
LIMIT_MB = 300.0
BREACH = {"runaway": "reply_too_long", "endless_line": "line_too_long", "trickle": "reply_deadline"}


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set so far (Linux VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


class Stand:
    """The hostile stand-in as its own process."""

    def __init__(self, log: Path, piece: int, char: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["-m", "tests.hostile_ollama", "--port", str(self.port), "--piece", str(piece)]
        args += ["--char", char]
        with log.open("ab") as f:
            self.proc = subprocess.Popen([PY, *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        for _ in range(400):
            try:
                httpx.get(f"{self.url}/api/version", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.close()
        raise RuntimeError(f"the stand-in did not start; see {log}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def run_batch(lab: Lab, word: str, n: int) -> tuple[float, Counter[str]]:
    """A batch of ``n`` prompts starting with ``word``; its seconds and how its items ended."""
    src = lab.root / f"{word}.jsonl"
    src.write_text("".join(json.dumps(f"{word} {i}") + "\n" for i in range(n)))
    bid, _ = lab.submit(PREFIX, src)
    t0 = time.perf_counter()
    lab.wait_done(PREFIX, bid, timeout=1800)
    secs = time.perf_counter() - t0
    out = lab.root / f"{word}-results.jsonl"
    run_child(batchq_cmd("results", bid, "-o", str(out)), lab.env(PREFIX)).check("results")
    ends: Counter[str] = Counter()
    for row in map(json.loads, out.read_text().splitlines()):
        ends[(row["error"] or {}).get("type") or row["status"]] += 1
    return secs, ends


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--mode", choices=sorted(BREACH), default="runaway")
    ap.add_argument("--piece", type=int, default=256, help="characters per streamed chunk")
    ap.add_argument(
        "--char", default="x", help="the character repeated (an emoji: 4 bytes in memory)"
    )
    ap.add_argument("--max-text", type=int, help="BATCHQ_REPLY_MAX_TEXT_BYTES (default: default)")
    ap.add_argument("--deadline", type=float, help="BATCHQ_REPLY_DEADLINE (trickle: 5)")
    args = ap.parse_args()
    if args.max_text:
        os.environ["BATCHQ_REPLY_MAX_TEXT_BYTES"] = str(args.max_text)
    if args.deadline or args.mode == "trickle":
        os.environ["BATCHQ_REPLY_DEADLINE"] = str(args.deadline or 5)
    s = Settings(concurrency=args.concurrency)
    n, c = args.items, args.concurrency

    lab = Lab(Path(tempfile.mkdtemp(prefix="batchq-runaway-")))
    stand = Stand(lab.logs / "stand-in.log", args.piece, args.char)
    try:
        with lab.workers(PREFIX, 1, ollama=stand.url, concurrency=c) as group:
            pid = group.procs[0].pid
            base_s, base_ends = run_batch(lab, "normal", n)
            base_mb = peak_rss_mb(pid)
            run_s, ends = run_batch(lab, args.mode, n)
            peak_mb = peak_rss_mb(pid)
    finally:
        stand.close()
        lab.close()

    in_flight = s.max_in_flight
    allowed = in_flight * (s.reply_max_line_bytes + s.reply_max_text_bytes) / (1 << 20)
    print(
        f"1 worker x {c} ({in_flight} requests in flight), {n} items a batch, "
        f"stand-in mode {args.mode} ({args.piece} x {args.char!r} a chunk)"
    )
    print(
        f"  bounds: reply_max_text_bytes {s.reply_max_text_bytes}, reply_max_line_bytes "
        f"{s.reply_max_line_bytes}, reply_deadline {s.reply_deadline:g} s"
    )
    print(f"  baseline (short replies): {base_s:6.1f} s  peak RSS {base_mb:6.1f} MB  {base_ends}")
    print(f"  {args.mode:24s}: {run_s:6.1f} s  peak RSS {peak_mb:6.1f} MB  {dict(ends)}")
    ok_mem = peak_mb < LIMIT_MB
    ok_ends = ends == Counter({BREACH[args.mode]: n})
    print(f"  peak / baseline: {peak_mb / base_mb:.2f}x; under {LIMIT_MB:g} MB: {ok_mem}")
    print(f"  every item ended {BREACH[args.mode]}: {ok_ends}")
    print(
        f"  at most held by streamed replies under these bounds: {in_flight} x (line + text) "
        f"= {allowed:.0f} MiB"
    )
    sys.exit(0 if ok_mem and ok_ends else 1)


if __name__ == "__main__":
    main()
