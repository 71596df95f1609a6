"""Controlling running batches end to end: real ``batchq worker`` processes, the CLI as a
process, and the simulator in its own process over a real socket."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from batchq.sim.process import expected_response
from tests.conftest import free_port
from tests.helpers import wait_for_workers
from tests.procs import Workers, batchq, env_for, sim_stats, simulator, wait_for
from tests.procs import read_status as status

pytestmark = pytest.mark.e2e

MODELS = ("llama3.2", "qwen3:8b")


@pytest.fixture(scope="module")
def slow_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every request takes 0.2 s, so a batch is still running when the test acts on it."""
    args = ["--parallel", "16", "--latency", "0.2", "--eval-tokens-per-s", "0"]
    with simulator(tmp_path_factory.mktemp("sim"), *args) as url:
        yield url


def write_prompts(path: Path, n: int, tag: str) -> None:
    path.write_text("".join(json.dumps(f"{tag} {i}") + "\n" for i in range(n)))


def read_results(env: dict[str, str], bid: str, tmp_path: Path) -> list[dict[str, Any]]:
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
        final = wait_for(env, bid, lambda s: bool(s["finished_at"]), timeout=180)
    assert (final["state"], final["succeeded"]) == ("completed", 80), workers.logs()
    rows = read_results(env, bid, tmp_path)
    assert [r["response"] for r in rows] == [
        expected_response("llama3.2", f"{tag} {i}") for i in range(80)
    ]
    # Each prompt went to Ollama once: pausing neither lost nor repeated an item.
    prompts = sim_stats(slow_sim)["prompts"]
    assert [prompts.get(f"{tag} {i}") for i in range(80)] == [1] * 80


def test_retry_failed_items_after_the_cause_is_fixed(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    # First run: the model of the odd items is missing, so they fail (404, one attempt each).
    with simulator(tmp_path, "--models", "llama3.2", "--eval-tokens-per-s", "0", port=port) as url:
        env = env_for(redis_url, prefix, tmp_path / "home", url)
        src = tmp_path / "p.jsonl"
        src.write_text(
            "".join(
                json.dumps({"custom_id": f"q-{i}", "prompt": f"r {i}", "model": MODELS[i % 2]})
                + "\n"
                for i in range(30)
            )
        )
        bid = batchq(env, "submit", str(src)).stdout.strip()
        workers = Workers(env, tmp_path)
        for _ in range(2):
            workers.start("--concurrency", "4")
        first = wait_for(env, bid, lambda s: bool(s["finished_at"]))
    assert (first["state"], first["succeeded"], first["failed"]) == ("completed", 15, 15)
    # The model is there now, and the server is busy half the time: retried attempts.
    with (
        workers,
        simulator(tmp_path, "--fail-503", "0.5", "--eval-tokens-per-s", "0", port=port),
    ):
        out = json.loads(batchq(env, "retry", bid, "--failed", "--ids", "q-0", "--json").stdout)
        assert out == {"batch_id": bid, "requeued": 16}
        final = wait_for(env, bid, lambda s: bool(s["finished_at"]))
        item = json.loads(batchq(env, "item", bid, "q-1", "--json").stdout)
    assert (final["state"], final["succeeded"], final["failed"]) == ("completed", 30, 0)
    rows = read_results(env, bid, tmp_path)
    assert [(r["custom_id"], r["status"]) for r in rows] == [
        (f"q-{i}", "succeeded") for i in range(30)
    ]
    for i, r in enumerate(rows):
        assert r["response"] == expected_response(MODELS[i % 2], f"r {i}")
        # Attempts add up over both runs: one 404, then at least one in the second run.
        assert r["attempts"] >= (2 if i % 2 or i == 0 else 1), r
    assert item["status"] == "succeeded" and item["attempts"] == rows[1]["attempts"]
    # Every failed attempt but the 404 of the first run is a 503 of the second, numbered on
    # from the first run; the history keeps the last ten.
    errors = item["errors"]
    assert [e["attempt"] for e in errors] == list(range(1, item["attempts"]))[-10:]
    assert [e["status_code"] for e in errors] == ([404] + [503] * (item["attempts"] - 2))[-10:]
    if item["attempts"] <= 11:
        assert errors[0]["type"] == "model_not_found"


def test_deadline_expires_what_was_not_started(
    redis_url: str, prefix: str, tmp_path: Path, slow_sim: str
) -> None:
    env = env_for(redis_url, prefix, tmp_path / "home", slow_sim)
    src = tmp_path / "p.jsonl"
    write_prompts(src, 300, f"deadline-{prefix}")
    with Workers(env, tmp_path) as workers:
        # Ten items a second at most: far fewer than 300 in time, and some even on a loaded
        # machine, where submitting alone may take a few of the 5 s.
        workers.start("--concurrency", "2")
        wait_for_workers(env, 1)
        bid = batchq(env, "submit", str(src), "--model", "llama3.2", "--deadline", "5s").stdout
        bid = bid.strip()
        final = wait_for(env, bid, lambda s: bool(s["finished_at"]))
    assert final["state"] == "expired", workers.logs()
    assert final["succeeded"] + final["expired"] == 300
    assert 0 < final["succeeded"] < 100 and final["failed"] == 0
    rows = read_results(env, bid, tmp_path)
    assert len(rows) == 300
    done = [r["index"] for r in rows if r["status"] == "succeeded"]
    # Dispatched in input order: what ran is a prefix, give or take the last window.
    assert max(done) < final["succeeded"] + 10
    expired = [r for r in rows if r["status"] == "expired"]
    assert {r["error"]["type"] for r in expired} == {"expired"}
    assert {(r["response"], r["attempts"]) for r in expired} == {(None, 0)}


class Receiver:
    """A webhook receiver (aiohttp) on its own thread and loop; answers each POST with the next
    of ``codes``, then 200, and records what came."""

    def __init__(self, codes: list[int]) -> None:
        self.codes = list(codes)
        self.got: list[tuple[int, dict[str, str], dict[str, Any]]] = []
        self.url = f"http://127.0.0.1:{free_port()}/hook"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        code = self.codes.pop(0) if self.codes else 200
        self.got.append((code, dict(request.headers), await request.json()))
        return web.Response(status=code)

    async def _start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        port = int(self.url.split(":")[2].split("/")[0])
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    def __enter__(self) -> Receiver:
        self._thread.start()
        self._runner = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def test_webhook_is_delivered_once_per_completion(
    redis_url: str, prefix: str, tmp_path: Path, slow_sim: str
) -> None:
    env = env_for(redis_url, prefix, tmp_path / "home", slow_sim, BATCHQ_NOTIFY_RETRY_DELAY="0.2")
    src = tmp_path / "p.jsonl"
    write_prompts(src, 20, f"hook-{prefix}")
    with Receiver([500]) as rec, Workers(env, tmp_path) as workers:
        for _ in range(2):
            workers.start("--concurrency", "4")
        args = ["submit", str(src), "--model", "llama3.2", "--notify", rec.url, "--meta", "k=v"]
        bid = batchq(env, *args).stdout.strip()
        wait_for(env, bid, lambda s: s["notify"] == "delivered")
        # The first POST was refused and tried again; the second one delivered it.
        assert [code for code, _, _ in rec.got] == [500, 200], workers.logs()
        _, headers, body = rec.got[-1]
        assert (body["batch_id"], body["state"], body["succeeded"]) == (bid, "completed", 20)
        assert body["metadata"] == {"k": "v"} and body["finished_at"]
        first_key = headers["Idempotency-Key"]
        assert first_key.startswith(bid + ":")
        # Restarted workers do not announce it again.
        workers.stop()
        for _ in range(2):
            workers.start("--concurrency", "4")
        wait_for_workers(env, 2)
        time.sleep(2.5)  # more than two polls of the hooks of both
        assert len(rec.got) == 2
        # Reopened by a retry, it finishes again, and that completion is announced too.
        batchq(env, "retry", bid, "--ids", "0")
        wait_for(env, bid, lambda s: s["notify"] == "delivered" and bool(s["finished_at"]))
        assert [code for code, _, _ in rec.got] == [500, 200, 200]
        assert rec.got[-1][1]["Idempotency-Key"] != first_key
