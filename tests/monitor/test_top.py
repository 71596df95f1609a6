"""``batchq top`` against a real worker process and the simulator over a socket."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from batchq.monitor.hosts_view import HostRow
from batchq.monitor.top import Snapshot, render
from batchq.monitor.watch import Rates
from batchq.sim.process import SimConfig
from tests.helpers import jsonl_prompts, sim_env, wait_for_workers, worker_info
from tests.procs import Workers, batchq, wait_done
from tests.waits import wait_for_value, wait_until


def top_json(env: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(batchq(env, "top", "--json").stdout)
    return data


def wait_top(env: dict[str, str], ok: Any, timeout: float = 120) -> dict[str, Any]:
    return wait_for_value(lambda: top_json(env), ok, timeout=timeout, interval=0.2, what="top")


@pytest.mark.e2e
def test_top_shows_live_workers_in_flight_and_last_error(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    # 8 tokens at 1 token/s: each request takes 8 s, long enough to be seen in flight by a
    # `top` that a loaded machine takes seconds to start.
    sim_config = SimConfig(parallel=4, eval_tokens_per_s=1)
    with sim_env(valkey_url, prefix, tmp_path, sim_config) as (sim, env):
        assert top_json(env) == {"workers": [], "queued_jobs": 0, "hosts": []}
        src = jsonl_prompts(tmp_path / "in.jsonl", 2)
        with Workers(env, tmp_path) as workers:
            proc = workers.start("--concurrency", "2")
            bid = batchq(env, "submit", str(src)).stdout.strip()
            # Ollama holds both requests: from now on, `top` has 8 s to see them.
            wait_until(lambda: sim.stats()["in_flight"] == 2, what="2 requests at Ollama")
            data = wait_top(env, lambda d: d["workers"] and d["workers"][0]["in_flight"] == 2)
            [w] = data["workers"]
            # Its concurrency of 2, and 1 more it may keep waiting in Ollama's queue.
            assert w["running"] == {bid: 2} and w["concurrency"] == 3
            assert (w["host"], w["pid"]) == (socket.gethostname(), proc.pid)
            assert w["endpoints"] == [sim.url] and w["heartbeat_age_s"] < 5
            # Its host serves one of the batch's two models: llama3.2, whose two requests are
            # in flight, or already the other, since llama3.2 has nothing left to send.
            [h] = data["hosts"]
            assert (h["endpoint"], h["workers"]) == (sim.url, 1)
            assert h["serving"] in (["llama3.2"], ["no-such-model"])
            assert h["loads"] == (1 if h["serving"] == ["llama3.2"] else 2)
            assert h["in_flight"] == 2

            data = wait_top(
                env, lambda d: d["workers"][0]["succeeded"] + d["workers"][0]["failed"] == 3
            )
            [w] = data["workers"]
            assert (w["succeeded"], w["failed"], w["in_flight"]) == (2, 1, 0)
            assert w["last_error"] == "model_not_found: model 'no-such-model' not found"

            table = batchq(env, "top").stdout  # piped: printed once
            assert "1 worker(s) alive" in table
            row = next(line for line in table.splitlines() if f":{proc.pid}" in line)
            assert sim.url in row and "0/3" in row and "model_not_found" in row
            workers.stop()
            # Said goodbye on SIGTERM: gone at once, not after its heartbeat lapses.
            assert top_json(env)["workers"] == []


@pytest.mark.e2e
def test_top_shows_each_hosts_model_and_its_loads(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    # One model resident at a time: two batches of two models, one after the other, load
    # each once.
    sim_config = SimConfig(parallel=2, max_loaded=1, load_seconds=0.2, latency=0.02)
    with sim_env(valkey_url, prefix, tmp_path, sim_config) as (sim, env):
        ids = []
        for model in ("llama3.2", "qwen3:8b"):
            src = tmp_path / f"{model}.txt"
            src.write_text("".join(f"{model} {i}\n" for i in range(6)))
            ids.append(batchq(env, "submit", str(src), "--model", model).stdout.strip())
        with Workers(env, tmp_path) as workers:
            workers.start("--concurrency", "2")
            wait_for_workers(env, 1)
            for bid in ids:
                assert wait_done(env, bid)["succeeded"] == 6
            loads = sum(sim.stats()["loads"].values())

            # Once its /api/ps is read again (every few seconds), what it serves is what it
            # holds.
            def settled(d: dict[str, Any]) -> bool:
                return bool(d["hosts"]) and d["hosts"][0]["loaded"] == d["hosts"][0]["serving"]

            [h] = wait_top(env, settled)["hosts"]
            assert h["endpoint"] == sim.url and h["workers"] == 1 and h["in_flight"] == 0
            assert h["serving"] in (["llama3.2"], ["qwen3:8b"]) and h["auto_limits"] == {}
            # Each model given to it once, and each a load at the simulator.
            assert h["loads"] == loads == 2, (h, sim.stats()["loads"])

            table = batchq(env, "top").stdout
            [row] = [line for line in table.splitlines() if line.startswith(sim.url)]
            assert h["serving"][0] in row and " 2 " in row


def test_render_sums_slots_and_shows_rates() -> None:
    now = 1_700_000_000_000
    ws = [
        worker_info("a:1:x", concurrency=4, running={"b_1": 3}, started_at=now),
        worker_info("b:2:y", concurrency=2, succeeded=7, failed=2, seen_at=now),
    ]
    rates = Rates()
    rates.add(0, {"a:1:x": 0, "b:2:y": 0})
    rates.add(10, {"a:1:x": 50, "b:2:y": 9})
    hosts = [HostRow("http://gpu:11434", "e", serving=["qwen3:8b"], loaded=[], loads=5)]
    console = Console(width=200, record=True, color_system=None)
    console.print(render(Snapshot(ws, queued_jobs=12, now_ms=now + 90_000, hosts=hosts), rates))
    text = console.export_text()
    row_h = next(line for line in text.splitlines() if line.startswith("http://gpu"))
    assert "qwen3:8b" in row_h and " 5 " in row_h
    assert "2 worker(s) alive" in text and "in flight 3/6" in text and "queue 12" in text
    row_a = next(line for line in text.splitlines() if line.startswith("a:1"))
    assert "3/4" in row_a and "5.0" in row_a and "b_1:3" in row_a and "1m30s" in row_a
    row_b = next(line for line in text.splitlines() if line.startswith("b:2"))
    assert "0/2" in row_b and "0.9" in row_b and " 9 " in row_b
