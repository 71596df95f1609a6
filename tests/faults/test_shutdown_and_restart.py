"""SIGTERM lets in-flight requests finish; Redis SIGKILLed and restarted (AOF) mid-batch
loses nothing and the workers carry on by themselves."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from batchq.store.embedded import EmbeddedServer
from tests.procs import (
    Workers,
    batchq,
    env_for,
    sim_stats,
    simulator,
    status,
    wait_count,
    wait_done,
)

pytestmark = pytest.mark.e2e


def prompts(path: Path, n: int, tag: str) -> Path:
    path.write_text("".join(json.dumps(f"{tag} {i}") + "\n" for i in range(n)))
    return path


def test_sigterm_finishes_in_flight_requests_and_wastes_no_attempt(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    with simulator(tmp_path, "--parallel", "8", "--latency", "2.0") as sim:
        env = env_for(valkey_url, prefix, tmp_path / "home", sim)
        bid = batchq(
            env, "submit", str(prompts(tmp_path / "p.jsonl", 8, "term")), "--model", "llama3.2"
        ).stdout.strip()
        with Workers(env, tmp_path) as workers:
            # Concurrency 4 and, by default, one more request for Ollama's queue: 5 in flight.
            first = workers.start("--concurrency", "4")
            wait_count(env, bid, "running", 5, timeout=30)
            first.send_signal(signal.SIGTERM)
            assert first.wait(30) == 0  # exits by itself, cleanly, after its requests finish
            s = status(env, bid)
            assert (s["succeeded"], s["running"], s["queued"], s["failed"]) == (5, 0, 3, 0)
            workers.start("--concurrency", "4")
            wait_done(env, bid, timeout=60)
        stats = sim_stats(sim)
    out = tmp_path / "r.jsonl"
    batchq(env, "results", bid, "-o", str(out))
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["status"], r["attempts"]) for r in rows] == [("succeeded", 1)] * 8
    assert stats["prompts"] == {f"term {i}": 1 for i in range(8)}


def test_redis_killed_and_restarted_mid_batch(prefix: str, tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "redis-home")
    url = server.ensure()
    try:
        with simulator(tmp_path, "--parallel", "16", "--latency", "0.2") as sim:
            env = env_for(url, prefix, tmp_path / "home", sim)
            n = 120
            bid = batchq(
                env, "submit", str(prompts(tmp_path / "p.jsonl", n, "redis")), "--model", "llama3.2"
            ).stdout.strip()
            with Workers(env, tmp_path) as workers:
                procs = [workers.start("--concurrency", "4") for _ in range(2)]
                wait_count(env, bid, "succeeded", n // 4, timeout=60)
                pid = int((server.home / "valkey.pid").read_text())
                os.kill(pid, signal.SIGKILL)
                time.sleep(1.5)
                assert server.ensure() == url  # same port, same data (AOF)
                final = wait_done(env, bid, timeout=120)
                assert all(p.poll() is None for p in procs), workers.logs()
            stats = sim_stats(sim)
        out = tmp_path / "r.jsonl"
        batchq(env, "results", bid, "-o", str(out))
    finally:
        server.stop()
    assert (final["succeeded"], final["failed"], final["total"]) == (n, 0, n)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(n))
    # Each prompt reached Ollama; a few may have been sent again around the outage.
    assert set(stats["prompts"]) == {f"redis {i}" for i in range(n)}


def test_sigterm_past_the_grace_period_requeues_without_counting(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    with simulator(tmp_path, "--parallel", "8", "--latency", "4.0") as sim:
        env = env_for(valkey_url, prefix, tmp_path / "home", sim, BATCHQ_SHUTDOWN_GRACE="1")
        bid = batchq(
            env, "submit", str(prompts(tmp_path / "p.jsonl", 4, "grace")), "--model", "llama3.2"
        ).stdout.strip()
        with Workers(env, tmp_path) as workers:
            first = workers.start("--concurrency", "4")
            wait_count(env, bid, "running", 4, timeout=30)
            first.send_signal(signal.SIGTERM)
            assert first.wait(30) == 0
            s = status(env, bid)
            assert (s["queued"], s["running"], s["succeeded"]) == (4, 0, 0)  # requeued
            workers.start("--concurrency", "4")
            wait_done(env, bid, timeout=60)
    out = tmp_path / "r.jsonl"
    batchq(env, "results", bid, "-o", str(out))
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    # The cut-off requests were refunded: each item counts only the attempt that finished.
    assert [(r["status"], r["attempts"]) for r in rows] == [("succeeded", 1)] * 4
