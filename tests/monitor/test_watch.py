"""``batchq status --watch``: the rate arithmetic, the rendering, and the real command following
a real batch (worker processes, the simulator over a socket) through a pipe."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from batchq import clock
from batchq.monitor.watch import Rates, make_view, plain_line, render, view_json, watch
from batchq.records import BatchState, Endpoint, Item
from batchq.sim.process import SimConfig
from batchq.store.batches import BatchStore
from batchq.store.presence import NO_WORKERS_NOTICE
from tests.helpers import sim_env, status, worker_info
from tests.procs import Workers, batchq, env_for
from tests.waits import async_wait_until


def test_rates_span_the_window_and_forget_older_samples() -> None:
    r = Rates(window=60)
    assert r.rate("done") is None
    r.add(0, {"done": 0})
    assert r.rate("done") is None  # one sample is no rate
    r.add(10, {"done": 100})
    assert r.rate("done") == pytest.approx(10.0)
    for t in range(20, 130, 10):
        r.add(t, {"done": 100 + (t - 10) * 2})  # 2 per second from t=10 on
    # Only the last minute counts: the fast first 10 s are forgotten.
    assert r.rate("done") == pytest.approx(2.0)
    assert r.rate("unknown") is None


def test_rates_of_a_counter_that_appears_or_resets() -> None:
    r = Rates(window=60)
    r.add(0, {"done": 0})
    r.add(5, {"done": 5, "w:new": 40})  # a worker that joined: no rate from one sample
    assert r.rate("w:new") is None
    r.add(10, {"done": 10, "w:new": 50})
    assert r.rate("w:new") == pytest.approx(2.0)
    r.add(15, {"done": 15, "w:new": 3})  # restarted under the same id: counts from 0 again
    assert r.rate("w:new") == 0.0


def test_view_rates_eta_and_workers() -> None:
    rates = Rates()
    w = worker_info(
        "vm:1:ab",
        endpoints=["http://gpu:11434"],
        concurrency=4,
        running={"b_0123456789abcdef": 3, "b_other": 1},
        succeeded=10,
        last_error="server_busy: busy",
        last_error_at=1,
    )
    v = make_view(status(1000, 100, tokens_out=5000), [w], rates, t=100.0)
    assert (v.items_per_s, v.tokens_per_s, v.eta_s) == (None, None, None)
    w2 = worker_info(
        "vm:1:ab", endpoints=w.endpoints, concurrency=4, running=w.running, succeeded=30
    )
    v = make_view(status(1000, 300, failed=100, tokens_out=25000), [w2], rates, t=110.0)
    assert v.items_per_s == pytest.approx(30.0)  # 300 more final items in 10 s
    assert v.tokens_per_s == pytest.approx(2000.0)
    assert v.eta_s == pytest.approx(600 / 30)
    assert v.workers[0].items_per_s == pytest.approx(2.0)

    line = plain_line(v)
    assert "400/1000 (40.0%)" in line and "failed 100" in line and "30.0 items/s" in line
    assert "2,000.0 tokens/s" in line and "ETA 20s" in line and "in flight 3" in line
    data = view_json(v)
    assert data["done"] == 400 and data["workers"][0]["in_flight"] == 4
    json.dumps(data)

    console = Console(width=140, record=True, color_system=None)
    console.print(render(v))
    text = console.export_text()
    assert "400/1,000" in text and "40.0%" in text and "http://gpu:11434" in text
    assert "vm:1" in text and "3" in text and "4/4" in text


def test_a_finished_batch_has_no_time_left() -> None:
    v = make_view(status(10, 10, finished_at="2025-01-01T00:00:00+00:00"), [], Rates(), t=0.0)
    assert v.eta_s == 0.0
    console = Console(width=100, record=True, color_system=None)
    console.print(render(v))
    assert "no live workers" in console.export_text()


@pytest.mark.e2e
def test_watch_follows_a_real_batch_through_a_pipe(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    n = 300
    # Some 503s, so that there are retries to count.
    sim_config = SimConfig(parallel=4, eval_tokens_per_s=800, fail_503=0.1, seed=7)
    with sim_env(valkey_url, prefix, tmp_path, sim_config) as (sim, env):
        src = tmp_path / "in.txt"
        src.write_text("".join(f"prompt {i}\n" for i in range(n)))
        bid = batchq(env, "submit", str(src), "--model", "llama3.2").stdout.strip()
        cmd = [sys.executable, "-m", "batchq", "status", bid, "--watch", "--interval", "0.2"]
        watcher = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        jwatcher = subprocess.Popen([*cmd, "--json"], env=env, stdout=subprocess.PIPE, text=True)
        with Workers(env, tmp_path) as workers:
            workers.start("--concurrency", "3")
            workers.start("--concurrency", "3")
            out, _ = watcher.communicate(timeout=90)
            jout, _ = jwatcher.communicate(timeout=30)
        assert watcher.returncode == 0 and jwatcher.returncode == 0
        sim_stats = sim.stats()

    lines = out.splitlines()
    assert len(lines) >= 3 and all(line.startswith(bid) for line in lines)
    dones = [int(line.split()[2].split("/")[0]) for line in lines]
    assert dones == sorted(dones) and dones[-1] == n
    assert " completed " in lines[-1] and "ETA 0s" in lines[-1]
    assert any("items/s" in line and "- items/s" not in line for line in lines)

    views = [json.loads(line) for line in jout.splitlines()]
    final = views[-1]
    assert final["state"] == "completed" and final["succeeded"] == n
    # Every 503 the simulator sent was retried, and counted once.
    assert final["retried"] == sim_stats["by_status"]["503"] > 0
    results = [json.loads(x) for x in batchq(env, "results", bid).stdout.splitlines()]
    assert final["tokens_out"] == sum(r["metrics"]["eval_count"] for r in results) > 0
    assert final["tokens_in"] == sum(r["metrics"]["prompt_eval_count"] for r in results) > 0
    seen = [w for v in views for w in v["workers"]]
    assert {w["endpoints"][0] for w in seen} == {sim.url}
    assert any(w["running"].get(bid) for w in seen)  # per-worker activity in this batch


def test_watch_needs_a_known_batch(valkey_url: str, prefix: str, tmp_path: Path) -> None:
    env = env_for(valkey_url, prefix, tmp_path, "http://127.0.0.1:9")
    proc = batchq(env, "status", "--watch", check=False)
    assert proc.returncode == 2 and "--watch needs a batch id" in proc.stderr
    proc = batchq(env, "status", "b_0123456789abcdef", "--watch", check=False)
    assert proc.returncode == 1 and "no batch with id" in proc.stderr
    proc = batchq(env, "status", "b_0123456789abcdef", "--watch", "--interval", "0", check=False)
    assert proc.returncode == 2 and "--interval" in proc.stderr


async def test_live_mode_redraws_until_the_batch_is_final(store: BatchStore) -> None:
    bid, _ = await store.submit([Item("0", Endpoint.GENERATE, {"model": "m", "prompt": "p"})])
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)

    async def finish_later() -> None:
        # Once the unfinished batch is on the screen, however long a loaded machine took.
        await async_wait_until(lambda: "0/1" in out.getvalue(), what="the first draw")
        meta = store.keys.batch(bid).meta
        await store.redis.hset(meta, mapping={"succeeded": 1, "state": "completed"})  # type: ignore[misc]
        await store.redis.hset(meta, "finished_at", str(clock.now_ms()))  # type: ignore[misc]

    task = asyncio.create_task(finish_later())
    async with asyncio.timeout(10):
        final = await watch(store, bid, console=console, mode="live", interval=0.05)
    await task
    assert final.state is BatchState.COMPLETED
    screen = out.getvalue()
    assert "0/1" in screen and "1/1" in screen and "no live workers" in screen


class Screen(io.StringIO):
    """What the live display drew, and an event set at each draw."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def write(self, s: str) -> int:
        self.written.set()
        return super().write(s)


async def test_live_mode_says_no_worker_is_live_until_one_is(store: BatchStore) -> None:
    bid, _ = await store.submit([Item("0", Endpoint.GENERATE, {"model": "m", "prompt": "p"})])
    out = Screen()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)

    async def until(text: str) -> None:
        while text not in out.getvalue():
            out.written.clear()
            await out.written.wait()

    async def worker_comes_then_batch_ends() -> None:
        await until(NO_WORKERS_NOTICE)
        w = worker_info("gpu7:99:ab", concurrency=4, running={bid: 1})
        await store.redis.hset(store.keys.worker_info(w.worker_id), mapping=w.to_mapping())  # type: ignore[misc]
        await store.redis.zadd(store.keys.workers, {w.worker_id: clock.now_ms() + 60_000})
        await until("gpu7:99")
        meta = store.keys.batch(bid).meta
        await store.redis.hset(meta, mapping={"succeeded": 1, "state": "completed"})  # type: ignore[misc]
        await store.redis.hset(meta, "finished_at", str(clock.now_ms()))  # type: ignore[misc]

    task = asyncio.create_task(worker_comes_then_batch_ends())
    async with asyncio.timeout(30):
        await watch(store, bid, console=console, mode="live", interval=0.05, notice_after=0.2)
    await task
    screen = out.getvalue()
    # The notice made way for the worker, and did not come back.
    assert screen.rindex(NO_WORKERS_NOTICE) < screen.rindex("gpu7:99")
