"""Controlling running batches end to end: real ``batchq worker`` processes, the CLI as a
process, and the simulator in its own process over a real socket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchq.batches import BatchStore
from batchq.connection import connect
from batchq.keys import Keys
from batchq.sim import expected_response

from .procs import Workers, batchq, env_for, sim_stats, simulator

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def slow_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every request takes 0.2 s, so a batch is still running when the test acts on it."""
    args = ["--parallel", "16", "--latency", "0.2", "--eval-tokens-per-s", "0"]
    with simulator(tmp_path_factory.mktemp("sim"), *args) as url:
        yield url


def status(env: dict[str, str], bid: str) -> dict[str, Any]:
    """The batch's status read in-process: polling through the CLI costs a second a call."""

    async def read() -> dict[str, Any]:
        client = connect(env["BATCHQ_REDIS_URL"])
        try:
            s = await BatchStore(client, Keys(env["BATCHQ_PREFIX"])).status(bid)
        finally:
            await client.aclose()
        return s.model_dump(mode="json")

    return asyncio.run(read())


def wait_for(
    env: dict[str, str], bid: str, ok: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not ok(s := status(env, bid)):
        assert time.monotonic() < deadline, s
        time.sleep(0.05)
    return s


def write_prompts(path: Path, n: int, tag: str) -> None:
    path.write_text("".join(json.dumps(f"{tag} {i}") + "\n" for i in range(n)))


def read_results(env: dict[str, str], bid: str, tmp_path: Path) -> list[dict[str, object]]:
    out = tmp_path / f"{bid}.jsonl"
    batchq(env, "results", bid, "-o", str(out))
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_pause_stops_sending_and_resume_finishes(
    redis_url: str, prefix: str, tmp_path: Path, slow_sim: str
) -> None:
    env = env_for(redis_url, prefix, tmp_path / "home", slow_sim)
    src = tmp_path / "p.jsonl"
    tag = f"pause-{prefix}"
    write_prompts(src, 80, tag)
    bid = batchq(env, "submit", str(src), "--model", "llama3.2").stdout.strip()
    with Workers(env, tmp_path) as workers:
        for _ in range(2):
            workers.start("--concurrency", "2")
        wait_for(env, bid, lambda s: s["succeeded"] >= 4)
        paused = json.loads(batchq(env, "pause", bid, "--json").stdout)
        assert paused["state"] == "paused"
        # What was already sent finishes; then nothing more reaches Ollama.
        wait_for(env, bid, lambda s: s["running"] == 0)
        sent = len(sim_stats(slow_sim)["arrivals"])
        time.sleep(1.5)  # several polls and dispatch rounds of both workers
        s = status(env, bid)
        assert s["state"] == "paused" and s["running"] == 0 and s["queued"] > 0
        assert len(sim_stats(slow_sim)["arrivals"]) == sent
        item = json.loads(batchq(env, "item", bid, "79", "--json").stdout)
        assert (item["status"], item["attempts"], item["result"]) == ("queued", 0, None)
        resumed = json.loads(batchq(env, "resume", bid, "--json").stdout)
        assert resumed["state"] == "running"
        final = wait_for(env, bid, lambda s: bool(s["finished_at"]), timeout=90)
    assert (final["state"], final["succeeded"]) == ("completed", 80), workers.logs()
    rows = read_results(env, bid, tmp_path)
    assert [r["response"] for r in rows] == [
        expected_response("llama3.2", f"{tag} {i}") for i in range(80)
    ]
    # Each prompt went to Ollama once: pausing neither lost nor repeated an item.
    prompts = sim_stats(slow_sim)["prompts"]
    assert [prompts.get(f"{tag} {i}") for i in range(80)] == [1] * 80
