"""Soak: one batch through every fault at once, then check that nothing was lost or doubled.

    .venv/bin/python bench/soak.py --items 5000 --minutes 5

While the batch runs, workers are SIGKILLed and SIGTERMed (and replaced), Redis is SIGKILLed
and restarted from its AOF, and Ollama (the simulator, injecting 500s, 503s, mid-stream errors
and runaway replies that never end all along) goes away for a while. Workers run with their
clocks two hours ahead of and behind the machine's, in turn (libfaketime, when installed). At
the end every item must have exactly one result: a success whose text belongs to its own prompt,
or, exactly for the prompts whose replies run away, a failure naming the bound it broke; and no
worker's memory may have grown past --max-rss-mb. Prints the figures; exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx
import redis

from batchq.sim.process import expected_response, runs_away
from batchq.store.embedded import EmbeddedServer

SEED = 11
# The error types of the bounds a reply that never ends can break (batchq.backends.ollama).
RUNAWAY_ERRORS = {"reply_deadline", "reply_too_long", "line_too_long", "body_too_large"}
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sim:
    def __init__(self, port: int, log: Path, args: list[str]) -> None:
        self.port, self.log, self.args = port, log, args
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.totals: Counter[str] = Counter()
        self.prompts: Counter[str] = Counter()

    def start(self) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [
                    PY,
                    "-m",
                    "batchq",
                    "sim",
                    "--port",
                    str(self.port),
                    "--seed",
                    str(SEED),
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for _ in range(200):
            try:
                httpx.get(self.url + "/api/version", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise SystemExit("simulator did not start")

    def collect(self) -> None:
        """Fold the running simulator's counters into the totals (they die with it)."""
        stats = httpx.get(self.url + "/_sim/stats", timeout=5).json()
        self.totals.update({k: int(v) for k, v in stats["by_status"].items()})
        self.prompts.update({k: int(v) for k, v in stats["prompts"].items()})
        self.totals["runaway"] += int(stats["runaways"])

    def stop(self) -> None:
        if self.proc:
            self.collect()
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--minutes", type=float, default=5.0, help="give up after this long")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--chaos-every", type=float, default=4.0, help="seconds between faults")
    ap.add_argument("--runaway", type=float, default=0.005, help="share of prompts that run away")
    ap.add_argument("--max-rss-mb", type=float, default=300.0, help="bound on any worker's RSS")
    ap.add_argument("--no-skew", action="store_true", help="every worker on the machine's clock")
    ap.add_argument("--heartbeat", type=float, default=1.0, help="BATCHQ_HEARTBEAT of the workers")
    args = ap.parse_args()
    rng = random.Random(SEED)

    tmp = Path(tempfile.mkdtemp(prefix="batchq-soak-"))
    server = EmbeddedServer(tmp / "redis")
    url = server.ensure()
    sim = Sim(
        free_port(),
        tmp / "sim.log",
        [
            "--parallel",
            "32",
            "--latency",
            "0.05",
            "--eval-tokens-per-s",
            "0",
            "--prompt-tokens-per-s",
            "0",
            "--fail-503",
            "0.05",
            "--fail-500",
            "0.02",
            "--fail-midstream",
            "0.02",
            "--fail-runaway",
            str(args.runaway),
        ],
    )
    sim.start()
    env = dict(
        os.environ,
        BATCHQ_REDIS_URL=url,
        OLLAMA_HOST=sim.url,
        BATCHQ_PREFIX="soak",
        BATCHQ_HOME=str(tmp / "home"),
        BATCHQ_HEARTBEAT=str(args.heartbeat),
        BATCHQ_RETRY_DELAY="0.2",
        BATCHQ_RETRY_MAX_DELAY="3",
        BATCHQ_MAX_ATTEMPTS="30",
        BATCHQ_REPAIR_AFTER="10",
        BATCHQ_CONCURRENCY=str(args.concurrency),
        BATCHQ_SHUTDOWN_GRACE="5",
    )
    src = tmp / "prompts.jsonl"
    with src.open("w") as f:
        for i in range(args.items):
            f.write(json.dumps(f"soak prompt {i}") + "\n")
    bid = subprocess.run(
        [PY, "-m", "batchq", "submit", str(src), "--model", "llama3.2"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    logs: list[Path] = []
    workers: list[subprocess.Popen[bytes]] = []
    signalled: set[int] = set()

    # Each worker in turn on the machine's clock, two hours ahead of it, two hours behind.
    lib = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))), None)
    skews = [0.0] if args.no_skew or lib is None else [0.0, 7200.0, -7200.0]
    skew_of: dict[Path, float] = {}

    def spawn() -> None:
        path = tmp / f"worker-{len(logs)}.log"
        logs.append(path)
        skew = skews[len(logs) % len(skews)]
        skew_of[path] = skew
        wenv = env
        if skew:
            wenv = {**env, "LD_PRELOAD": lib or "", "FAKETIME": f"{skew:+.0f}s"}
            wenv["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        with path.open("w") as log:
            workers.append(
                subprocess.Popen(
                    [PY, "-m", "batchq", "worker"], env=wenv, stdout=log, stderr=subprocess.STDOUT
                )
            )

    peak_rss: dict[int, float] = {}

    def sample_rss() -> None:
        for w in workers:
            if w.poll() is None:
                peak_rss[w.pid] = max(peak_rss.get(w.pid, 0.0), _peak_rss_mb(w.pid))

    for _ in range(args.workers):
        spawn()
    events: Counter[str] = Counter()
    kills: list[float] = []
    outage_s = 0.0
    r = redis.Redis.from_url(url, socket_timeout=5)
    t0 = time.monotonic()
    deadline = t0 + args.minutes * 60
    next_chaos = t0 + args.chaos_every
    # Every kind of fault, in turn; which worker dies and how long Ollama is gone is random.
    plan = ["kill", "redis", "kill", "term", "ollama", "kill"]
    n_chaos = 0
    finished = False
    while time.monotonic() < deadline:
        try:
            finished = r.hget(f"soak:b:{bid}", "finished_at") is not None
        except redis.RedisError:
            finished = False
        if finished:
            break
        sample_rss()
        for w in workers:
            if w.poll() is not None and w.pid not in signalled:
                # Died by itself: a bug this soak exists to find. Count it, keep going.
                signalled.add(w.pid)
                events["workers crashed"] += 1
                spawn()
        if time.monotonic() >= next_chaos:
            action = plan[n_chaos % len(plan)]
            n_chaos += 1
            live = [w for w in workers if w.poll() is None]
            if action in ("kill", "term") and live:
                victim = rng.choice(live)
                signalled.add(victim.pid)
                if action == "kill":
                    victim.kill()
                    kills.append(time.time())
                else:
                    victim.send_signal(signal.SIGTERM)
                events["workers SIGKILLed" if action == "kill" else "workers SIGTERMed"] += 1
                spawn()
            elif action == "redis" and events["Redis restarts"] < 3:
                os.kill(int((server.home / "valkey.pid").read_text()), signal.SIGKILL)
                time.sleep(1.0)
                server.ensure()
                events["Redis restarts"] += 1
            elif action == "ollama" and events["Ollama outages"] < 3:
                sim.stop()
                pause = rng.uniform(3, 8)
                time.sleep(pause)
                outage_s += pause
                sim.start()
                events["Ollama outages"] += 1
            next_chaos = time.monotonic() + args.chaos_every
        time.sleep(0.2)
    elapsed = time.monotonic() - t0

    sample_rss()
    for w in workers:
        if w.poll() is None:
            signalled.add(w.pid)
            w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(30)
        except subprocess.TimeoutExpired:
            w.kill()
    sim.stop()
    out = tmp / "results.jsonl"
    subprocess.run([PY, "-m", "batchq", "results", bid, "-o", str(out)], env=env, check=True)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    server.stop()

    seen = Counter(row["index"] for row in rows)
    lost = args.items - len(seen)
    duplicates = sum(c - 1 for c in seen.values())
    bounded = [r for r in rows if r["status"] == "failed" and _broke_a_bound(r)]
    wrong = sum(1 for row in rows if not _right(row, args.runaway))
    # Recovery delay: from each SIGKILL to the first reap of lapsed leases that follows it.
    reaps: list[float] = []
    pattern = re.compile(r"^(\S+ \S+) WARNING .*whose worker stopped renewing its lease")
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            m = pattern.match(line)
            if m:
                at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                reaps.append(at - skew_of[path])  # a skewed worker logs its own clock's time
    delays = [min((t for t in reaps if t >= k), default=float("nan")) - k for k in kills]
    injected = {k: v for k, v in sim.totals.items() if k not in ("200", "runaway")}
    rss = max(peak_rss.values(), default=float("nan"))

    print(
        f"soak: {args.items} items, {args.workers} workers x {args.concurrency}, "
        f"{elapsed:.0f} s{'' if finished else ' (TIMED OUT)'}"
    )
    for name in (
        "workers SIGKILLed",
        "workers SIGTERMed",
        "Redis restarts",
        "Ollama outages",
        "workers crashed",
    ):
        print(f"  {name:<20} {events[name]}")
    print(f"  Ollama down in all   {outage_s:.1f} s")
    print(f"  error replies seen   {sum(injected.values())} {dict(sorted(injected.items()))}")
    runaways = sum(
        runs_away(f"soak prompt {i}", args.runaway, seed=SEED) for i in range(args.items)
    )
    print(f"  runaway replies      {sim.totals['runaway']} (to {runaways} prompts that run away)")
    print(f"  requests to Ollama   {sum(sim.prompts.values())} for {args.items} prompts")
    print(f"  worker clocks        {', '.join(f'{s / 3600:+.0f} h' for s in skews)}")
    print(
        f"  items with a result  {len(seen)}  lost {lost}  duplicates {duplicates}  "
        f"failed on a bound {len(bounded)}  wrong {wrong}"
    )
    print(f"  peak worker RSS      {rss:.0f} MB (bound {args.max_rss_mb:.0f} MB)")
    shown = ", ".join(f"{d:.2f}" for d in delays)
    print(f"  SIGKILL -> re-queue  {shown or 'n/a'} s")
    ok = finished and lost == 0 and duplicates == 0 and wrong == 0
    ok = ok and events["workers crashed"] == 0 and rss <= args.max_rss_mb
    print("  RESULT", "OK" if ok else "FAILED", f"(logs in {tmp})")
    return 0 if ok else 1


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _right(row: dict[str, object], runaway: float) -> bool:
    """A success with its own prompt's answer or, exactly for the prompts whose replies run
    away, a failure on one of a reply's bounds."""
    prompt = f"soak prompt {row['index']}"
    if runs_away(prompt, runaway, seed=SEED):
        return row["status"] == "failed" and _broke_a_bound(row)
    expected = expected_response("llama3.2", prompt, seed=SEED)
    return row["status"] == "succeeded" and row["response"] == expected


def _broke_a_bound(row: dict[str, object]) -> bool:
    """A failure that a runaway reply causes: one of the bounds on a reply."""
    error = row.get("error")
    return isinstance(error, dict) and error.get("type") in RUNAWAY_ERRORS


if __name__ == "__main__":
    sys.exit(main())
