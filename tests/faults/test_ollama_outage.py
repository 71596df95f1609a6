"""Ollama down, then back: items wait with a capped backoff instead of failing, and the
time it was unreachable costs no item an attempt."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.procs import Workers, batchq, env_for, sim_stats, simulator, status, wait_done
from tests.waits import wait_until

pytestmark = pytest.mark.e2e


def test_batch_survives_ollama_being_down(valkey_url: str, prefix: str, tmp_path: Path) -> None:
    port = free_port()
    # Two attempts only: if the outage counted, every item would fail.
    env = env_for(
        valkey_url,
        prefix,
        tmp_path / "home",
        f"http://127.0.0.1:{port}",
        BATCHQ_MAX_ATTEMPTS="2",
        BATCHQ_RETRY_DELAY="0.2",
        BATCHQ_RETRY_MAX_DELAY="2",
    )
    n = 30
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(f"down {i}") + "\n" for i in range(n)))
    bid = batchq(env, "submit", str(src), "--model", "llama3.2").stdout.strip()
    log = tmp_path / "worker-0.log"
    with Workers(env, tmp_path) as workers:
        started = time.monotonic()
        workers.start("--concurrency", "4")
        time.sleep(8)  # the outage: nothing listens on the port (not a wait for anything)
        # However slowly a loaded machine started the worker, it met the outage often enough
        # (5 requests in flight) that counted attempts would have failed items.
        wait_until(lambda: log.read_text().count("cannot reach Ollama") >= 10, what="retries")
        outage_s = time.monotonic() - started
        s = status(env, bid)
        assert (s["succeeded"], s["failed"]) == (0, 0)  # waiting, not failing
        with simulator(tmp_path, "--parallel", "8", port=port) as sim:
            final = wait_done(env, bid)
            stats = sim_stats(sim)
    assert (final["succeeded"], final["failed"]) == (n, 0)
    out = tmp_path / "r.jsonl"
    batchq(env, "results", bid, "-o", str(out))
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["attempts"] for r in rows] == [1] * n
    assert stats["prompts"] == {f"down {i}": 1 for i in range(n)}
    # Backoff, not a busy loop: over 8 s, at most a few dozen retries of the jobs in flight.
    assert log.read_text().count("cannot reach Ollama") < 25 * outage_s
