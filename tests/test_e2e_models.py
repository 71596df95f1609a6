"""Model-aware dispatch end to end: real ``batchq worker`` processes against a simulator that
holds one model at a time and pays a load for each switch (as Ollama's scheduler does)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tests.helpers import wait_for_workers
from tests.procs import Workers, batchq, env_for, sim_stats, simulator, wait_done

pytestmark = pytest.mark.e2e

MODELS = ("llama3.2", "qwen3:8b", "gemma3:4b")


def sim_args(load_s: float, latency: float) -> list[str]:
    """One resident model at a time, two slots."""
    flags = {"--max-loaded": 1, "--load-seconds": load_s, "--parallel": 2, "--latency": latency}
    return [str(x) for kv in flags.items() for x in kv]


def submit(env: dict[str, str], path: Path, model: str, n: int) -> str:
    path.write_text("".join(json.dumps(f"{model} {i}") + "\n" for i in range(n)))
    return str(batchq(env, "submit", str(path), "--model", model).stdout.strip())


def run_to_the_end(
    env: dict[str, str], tmp_path: Path, ids: list[str], *, workers: int, concurrency: int
) -> None:
    """``workers`` worker processes until every batch in ``ids`` is done, all succeeded."""
    with Workers(env, tmp_path) as procs:
        for _ in range(workers):
            procs.start("--concurrency", str(concurrency))
        wait_for_workers(env, workers)
        for bid in ids:
            s = wait_done(env, bid)
            assert s["succeeded"] == s["total"], s


def test_batches_of_three_models_load_each_model_once(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    # A load of 0.3 s: round robin between these batches would load a model for nearly every
    # request (three dozen loads).
    with simulator(tmp_path, *sim_args(0.3, 0.02)) as sim:
        env = env_for(redis_url, prefix, tmp_path / "home", sim)
        ids = [submit(env, tmp_path / f"{i}.jsonl", m, 12) for i, m in enumerate(MODELS)]
        run_to_the_end(env, tmp_path, ids, workers=2, concurrency=2)
        stats = sim_stats(sim)
    # One host: each model loaded once; one more if a switch raced the last requests.
    assert sum(stats["loads"].values()) <= len(MODELS) + 1, stats["loads"]
    assert set(stats["loads"]) == set(MODELS)


def test_a_host_serves_one_model_until_it_runs_dry(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    with simulator(tmp_path, *sim_args(0.2, 0.05)) as sim:
        env = env_for(redis_url, prefix, tmp_path / "home", sim)
        ids = [submit(env, tmp_path / f"{i}.jsonl", m, 20) for i, m in enumerate(MODELS[:2])]
        run_to_the_end(env, tmp_path, ids, workers=1, concurrency=2)
        stats = sim_stats(sim)
    seen = [p.split(" ", 1)[0] for p in stats["arrival_prompts"]]
    # All of one model, then all of the other: one switch.
    switches = sum(1 for a, b in itertools.pairwise(seen) if a != b)
    assert switches == 1, seen


def test_a_file_alternating_models_loads_each_model_once(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    # The case: lines that alternate three models, in one batch.
    with simulator(tmp_path, *sim_args(0.3, 0.02)) as sim:
        env = env_for(redis_url, prefix, tmp_path / "home", sim)
        path = tmp_path / "mixed.jsonl"
        lines = [{"model": MODELS[i % 3], "prompt": f"{MODELS[i % 3]} {i}"} for i in range(36)]
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        bid = str(batchq(env, "submit", str(path)).stdout.strip())
        run_to_the_end(env, tmp_path, [bid], workers=2, concurrency=2)
        stats = sim_stats(sim)
        out = batchq(env, "results", bid).stdout.splitlines()
    assert sum(stats["loads"].values()) <= len(MODELS) + 1, stats["loads"]
    # Every prompt answered once, and the results come back in input order.
    assert all(n == 1 for n in stats["prompts"].values())
    assert [json.loads(line)["custom_id"] for line in out] == [str(i) for i in range(36)]


def test_two_hosts_spread_three_models(redis_url: str, prefix: str, tmp_path: Path) -> None:
    args = sim_args(0.3, 0.05)
    with simulator(tmp_path, *args) as one, simulator(tmp_path, *args) as two:
        env = env_for(redis_url, prefix, tmp_path / "home", f"{one},{two}")
        ids = [submit(env, tmp_path / f"{i}.jsonl", m, 16) for i, m in enumerate(MODELS)]
        run_to_the_end(env, tmp_path, ids, workers=2, concurrency=4)
        loads = [sim_stats(url)["loads"] for url in (one, two)]
    # Each model loaded on one host, plus at most one more per host as a model runs dry.
    assert sum(sum(x.values()) for x in loads) <= len(MODELS) + 2, loads
    # Both hosts worked.
    assert all(loads), loads
