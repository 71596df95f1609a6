"""SIGTERM lets in-flight requests finish; Redis SIGKILLed and restarted (AOF) mid-batch
loses nothing and the workers carry on by themselves."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from tests.waits import wait_until

pytestmark = pytest.mark.e2e


def held_at_ollama(sim: str, n: int) -> None:
    """Until the simulator holds ``n`` requests: sent, not just started by the worker."""
    wait_until(lambda: sim_stats(sim)["in_flight"] == n, what=f"{n} requests at Ollama")


def prompts(path: Path, n: int, tag: str) -> Path:
    path.write_text("".join(json.dumps(f"{tag} {i}") + "\n" for i in range(n)))
    return path


def submit(env: dict[str, str], tmp_path: Path, n: int, tag: str) -> str:
    """``n`` prompts ``{tag} {i}`` submitted through the CLI: the batch id."""
    src = prompts(tmp_path / "p.jsonl", n, tag)
    return str(batchq(env, "submit", str(src), "--model", "llama3.2").stdout.strip())


def results(env: dict[str, str], tmp_path: Path, bid: str) -> list[dict[str, Any]]:
    """The batch's results, exported through the CLI to a file and read back."""
    out = tmp_path / "r.jsonl"
    batchq(env, "results", bid, "-o", str(out))
    return [json.loads(x) for x in out.read_text().splitlines()]


@dataclass
class Terminated:
    """A batch whose first worker took a SIGTERM with requests at its Ollama, and exited
    cleanly (:func:`sigterm_mid_batch`). ``slow_stats`` and ``fast_stats``: each Ollama's
    statistics once the workers have stopped."""

    env: dict[str, str]
    bid: str
    slow: str  # the first worker's Ollama
    fast: str  # the Ollama of the worker that finishes the batch
    workers: Workers
    slow_stats: dict[str, Any] = field(default_factory=dict)
    fast_stats: dict[str, Any] = field(default_factory=dict)

    def finish(self) -> None:
        """A second worker, on an Ollama of its own, runs the batch to its end."""
        self.workers.start("--concurrency", "4", env={**self.env, "OLLAMA_HOST": self.fast})
        wait_done(self.env, self.bid)


@contextlib.contextmanager
def sigterm_mid_batch(
    valkey_url: str,
    prefix: str,
    tmp_path: Path,
    *,
    latency: str,
    n: int,
    tag: str,
    held: int,
    **extra_env: str,
) -> Iterator[Terminated]:
    """``n`` prompts submitted, and a worker of concurrency 4 on an Ollama that takes
    ``latency`` seconds a request, sent SIGTERM as soon as that Ollama holds ``held`` of them;
    it must exit by itself, cleanly. Another Ollama stands by for :meth:`Terminated.finish`."""
    with (
        simulator(tmp_path, "--parallel", "8", "--latency", latency) as slow,
        simulator(tmp_path, "--parallel", "8") as fast,
    ):
        env = env_for(valkey_url, prefix, tmp_path / "home", slow, **extra_env)
        bid = submit(env, tmp_path, n, tag)
        with Workers(env, tmp_path) as workers:
            first = workers.start("--concurrency", "4")
            held_at_ollama(slow, held)
            first.send_signal(signal.SIGTERM)
            assert first.wait(120) == 0  # exits by itself, cleanly, after its requests end
            run = Terminated(env, bid, slow, fast, workers)
            yield run
        run.slow_stats, run.fast_stats = sim_stats(slow), sim_stats(fast)


def test_sigterm_finishes_in_flight_requests_and_wastes_no_attempt(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    # The first worker's Ollama takes 5 s a request: the SIGTERM, sent as soon as Ollama holds
    # them, lands while they are in flight even on a loaded machine (they must finish, and
    # nothing new start). The worker that finishes the batch has an Ollama of its own, so
    # the wait for it costs nothing and each Ollama says which prompts it was sent.
    # Concurrency 4 and, by default, one more request for Ollama's queue: 5 in flight.
    with sigterm_mid_batch(
        valkey_url, prefix, tmp_path, latency="5.0", n=8, tag="term", held=5
    ) as run:
        s = status(run.env, run.bid)
        assert (s["succeeded"], s["running"], s["queued"], s["failed"]) == (5, 0, 3, 0)
        run.finish()
    sent = run.slow_stats["prompts"], run.fast_stats["prompts"]
    rows = results(run.env, tmp_path, run.bid)
    assert [(r["status"], r["attempts"]) for r in rows] == [("succeeded", 1)] * 8
    # Each prompt went out once: 5 before the SIGTERM, the 3 it left queued after it.
    assert sorted(sent[0].values()) == [1] * 5 and sorted(sent[1].values()) == [1] * 3
    assert {**sent[0], **sent[1]} == {f"term {i}": 1 for i in range(8)}


def test_redis_killed_and_restarted_mid_batch(prefix: str, tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "redis-home")
    url = server.ensure(timeout=120)
    try:
        with simulator(tmp_path, "--parallel", "16", "--latency", "0.2") as sim:
            env = env_for(url, prefix, tmp_path / "home", sim)
            n = 120
            bid = submit(env, tmp_path, n, "redis")
            with Workers(env, tmp_path) as workers:
                procs = [workers.start("--concurrency", "4") for _ in range(2)]
                wait_count(env, bid, "succeeded", n // 4)
                pid = int((server.home / "valkey.pid").read_text())
                os.kill(pid, signal.SIGKILL)
                # Gone for sure (else ensure() would take the dying server for a live one),
                # then down a while longer: an outage the workers have to ride out.
                wait_until(lambda: server.url() is None, what="the killed server gone")
                time.sleep(1.5)
                assert server.ensure(timeout=120) == url  # same port, same data (AOF)
                final = wait_done(env, bid)
                assert all(p.poll() is None for p in procs), workers.logs()
            stats = sim_stats(sim)
        rows = results(env, tmp_path, bid)
    finally:
        server.stop()
    assert (final["succeeded"], final["failed"], final["total"]) == (n, 0, n)
    assert [r["index"] for r in rows] == list(range(n))
    # Each prompt reached Ollama; a few may have been sent again around the outage.
    assert set(stats["prompts"]) == {f"redis {i}" for i in range(n)}


def test_sigterm_past_the_grace_period_requeues_without_counting(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    # The first worker's Ollama never answers in time (10 minutes a request), so its grace
    # period of 1 s surely runs out with all 4 requests in flight, however late the SIGTERM
    # lands. (With 4 s requests, a status poll through the CLI at load 5.7 took long enough
    # that the SIGTERM came 3 s after they started, and they finished within the grace.)
    # The worker that finishes the batch has an Ollama of its own that answers at once.
    with sigterm_mid_batch(
        valkey_url,
        prefix,
        tmp_path,
        latency="600",
        n=4,
        tag="grace",
        held=4,
        BATCHQ_SHUTDOWN_GRACE="1",
    ) as run:
        s = status(run.env, run.bid)
        assert (s["queued"], s["running"], s["succeeded"]) == (4, 0, 0)  # requeued
        # The worker hung up on each request it cut off.
        wait_until(lambda: sim_stats(run.slow)["in_flight"] == 0, what="the requests dropped")
        run.finish()
    cut_off = run.slow_stats
    rows = results(run.env, tmp_path, run.bid)
    # The cut-off requests were refunded: each item counts only the attempt that finished.
    assert [(r["status"], r["attempts"]) for r in rows] == [("succeeded", 1)] * 4
    assert cut_off["prompts"] == {f"grace {i}": 1 for i in range(4)}
    assert cut_off["by_status"]["499"] == 4  # hung up on, not answered
