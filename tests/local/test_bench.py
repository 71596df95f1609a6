"""``batchq bench``: the figures from stored results (pure), and end to end through real worker
processes against the simulator, whose models are given different speeds."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from batchq import clock
from batchq.cli.main import main
from batchq.errors import BatchqError, ConfigError, InputError
from batchq.local.bench import (
    bench_items,
    bench_prompts,
    parse_models,
    percentile,
    render_table,
    summarize,
)
from batchq.records import Endpoint, Item, ItemError, ItemResult, ItemStatus
from batchq.sim.process import SimConfig, running_sim
from batchq.store.batches import BatchStore
from batchq.store.namespace import drop_namespace, served_endpoints
from batchq.store.presence import WorkerInfo
from tests.helpers import wait_for_workers
from tests.procs import Workers, batchq, ctrl_c_reaches_it, env_for, sim_stats, simulator

MS = 1_000_000  # nanoseconds


def ok(index: int, **metrics: Any) -> ItemResult:
    return ItemResult(
        index=index,
        custom_id=str(index),
        status=ItemStatus.SUCCEEDED,
        response="x",
        metrics=metrics,
    )


def failed(index: int, kind: str = "model_not_found") -> ItemResult:
    error = ItemError(type=kind, message=f"{kind} happened", status_code=404)
    return ItemResult(index=index, custom_id=str(index), status=ItemStatus.FAILED, error=error)


def test_speeds_are_token_weighted_per_run_then_averaged_over_runs() -> None:
    results = [
        # Run 1: 30 tokens in 1.5 s (not the mean of 10/0.5 s and 20/1 s, which is also 20).
        ok(0, eval_count=10, eval_duration=500 * MS, prompt_eval_count=4, prompt_eval_duration=MS),
        ok(1, eval_count=20, eval_duration=1000 * MS, prompt_eval_count=6, prompt_eval_duration=MS),
        # Run 2: 40 tokens in 1 s; its second request failed.
        ok(2, eval_count=40, eval_duration=1000 * MS, prompt_eval_count=10, prompt_eval_duration=0),
        failed(3),
    ]
    report = summarize("m", "b_x", results, prompts_per_run=2)
    assert [r.eval_tokens_per_s for r in report.runs] == [20.0, 40.0]
    assert report.eval_tokens_per_s == 30.0
    # A prompt_eval_duration of 0 (cached prompt) says nothing about prompt speed.
    assert [r.prompt_tokens_per_s for r in report.runs] == [5000.0, None]
    assert report.prompt_tokens_per_s == 5000.0
    assert (report.requests, report.succeeded, report.failed) == (4, 3, 1)
    assert [(r.succeeded, r.failed) for r in report.runs] == [(2, 0), (1, 1)]
    assert report.errors == {"model_not_found": {"count": 1, "message": "model_not_found happened"}}
    assert report.ttft_s is None and report.latency_p50_s is None


def test_latency_load_and_first_token_figures() -> None:
    results = [
        ok(0, total_duration=900 * MS, load_duration=300 * MS, time_to_first_token=500 * MS),
        ok(1, total_duration=600 * MS, load_duration=2 * MS, time_to_first_token=200 * MS),
        ok(2, total_duration=700 * MS, load_duration=4 * MS, time_to_first_token=300 * MS),
    ]
    report = summarize("m", "b_x", results, prompts_per_run=1)
    assert report.latency_p50_s == pytest.approx(0.7)
    assert report.latency_p95_s == pytest.approx(0.88)  # 0.7 + 0.9 x (0.9 - 0.7)
    assert report.load_max_s == pytest.approx(0.3)
    assert report.load_mean_s == pytest.approx(0.102)
    assert report.ttft_s == pytest.approx((0.5 + 0.2 + 0.3) / 3)
    assert [r.ttft_s for r in report.runs] == pytest.approx([0.5, 0.2, 0.3])


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 0.5) is None
    assert percentile([4.0], 0.95) == 4.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.95) == pytest.approx(4.8)


def test_table_shows_dashes_and_the_reason_for_a_model_that_only_failed() -> None:
    good = summarize("fast:1b", "b_1", [ok(0, eval_count=50, eval_duration=500 * MS)], 1)
    bad = summarize("nope", "b_2", [failed(0), failed(1)], 1)
    lines = render_table([good, bad]).splitlines()
    assert lines[0].split() == [
        "model", "ok", "failed", "eval", "tok/s", "prompt", "tok/s", "TTFT", "ms",
        "p50", "s", "p95", "s", "load", "s",
    ]  # fmt: skip
    assert lines[1].split()[:4] == ["fast:1b", "1/1", "0", "100.0"]
    assert lines[2].split() == ["nope", "0/2", "2"] + ["-"] * 6
    assert lines[3] == "nope: 2 failed with model_not_found: model_not_found happened"
    # Right-aligned figures: every row of the table ends in the same column.
    assert len({len(line) for line in lines[:3]}) == 1
    served = [
        replace(r, ollama_host="http://gpu:11434", ollama_version="0.12.0") for r in (good, bad)
    ]
    assert render_table(served).splitlines()[0] == "Ollama 0.12.0 at http://gpu:11434"


def test_table_escapes_what_a_hostile_ollama_sends() -> None:
    hostile = "\x1b]0;pwned\x07\x1b[2J"
    bad = summarize("nope", "b_2", [failed(0, kind="ollama_error")], 1)
    bad.errors["ollama_error"]["message"] = hostile
    text = render_table([replace(bad, ollama_host="http://gpu:11434", ollama_version=hostile)])
    assert "\x1b" not in text and "\x07" not in text
    assert text.count("\\x1b]0;pwned\\x07\\x1b[2J") == 2


def test_items_run_after_run_with_each_model() -> None:
    prompts = [
        Item("0", Endpoint.GENERATE, {"model": "-", "prompt": "a", "options": {"seed": 1}}),
        Item("x", Endpoint.CHAT, {"model": "old", "messages": [{"role": "user", "content": "b"}]}),
    ]
    items = list(bench_items(prompts, "qwen3:8b", runs=2))
    assert [i.custom_id for i in items] == [
        "run1-prompt0",
        "run1-prompt1",
        "run2-prompt0",
        "run2-prompt1",
    ]
    assert {i.model for i in items} == {"qwen3:8b"}
    assert items[2].body == {"model": "qwen3:8b", "prompt": "a", "options": {"seed": 1}}
    assert items[3].endpoint is Endpoint.CHAT
    assert prompts[1].body["model"] == "old"


def test_prompts_from_flags_and_a_file() -> None:
    src = io.BytesIO(
        b'{"prompt": "from file", "model": "llama3.2"}\n'
        b'{"messages": [{"role": "user", "content": "hi"}]}\n'
    )
    prompts = bench_prompts(["one", "two"], src)
    assert [p.body.get("prompt") for p in prompts] == ["one", "two", "from file", None]
    assert prompts[3].endpoint is Endpoint.CHAT
    txt = bench_prompts([], io.BytesIO(b"first\n\nsecond\n"), fmt="txt")
    assert [p.body["prompt"] for p in txt] == ["first", "second"]
    with pytest.raises(InputError, match=r"line 2, field 'prompt'"):
        bench_prompts([], io.BytesIO(b'"ok"\n{"prompt": 5}\n'))
    with pytest.raises(ConfigError, match="--prompt number 2 is empty"):
        bench_prompts(["a", "  "])
    with pytest.raises(ConfigError, match="give a prompt"):
        bench_prompts([])


def test_models_are_checked() -> None:
    assert parse_models(" qwen3:8b, gemma3:4b ,") == ["qwen3:8b", "gemma3:4b"]
    with pytest.raises(ConfigError, match="at least one model"):
        parse_models(" , ")
    with pytest.raises(ConfigError, match="a given more than once"):
        parse_models("a,b,a")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "a,a", "--prompt", "p"], "--models: a given more than once"),
        (
            ["--models", "a", "--prompt", "p", "--runs", "0"],
            "--runs and --workers must be at least 1",
        ),
        (["--models", "a", "--prompt", "p", "--workers", "0"], "--workers must be at least 1"),
        (
            ["--models", "a", "--prompt", "p", "--ollama", "127.0.0.1:9,127.0.0.1:10"],
            "bench measures one Ollama at a time, not 2",
        ),
        (["--models", "a"], "give a prompt"),
        (["--models", "a", "--prompt", "p"], "or try batchq against the simulator"),
        (["--models", "a", "--prompt-file", "/nonexistent/p.jsonl"], "cannot read"),
    ],
)
def test_bad_bench_arguments_fail_before_any_work(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing answers at this Ollama address: the last case is about that, the others must fail
    # before it is asked (and no Redis is ever reached: the settings name none that answers).
    assert main(["bench", "--ollama", "127.0.0.1:9", "--redis", "redis://127.0.0.1:9", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# -- end to end --------------------------------------------------------------------------------

SLOW, FAST = 40.0, 160.0  # eval tokens/s of the two simulated models
PROMPT_RATE, LOAD, TOKENS = 100.0, 0.3, 12
PROMPT = " ".join(f"w{i}" for i in range(20))  # 20 prompt tokens: 0.2 s of prompt eval
RUNS = 3


@pytest.mark.e2e
def test_bench_compares_models_through_real_workers(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    args = [
        f"--model-speeds=qwen3:8b={SLOW:g},gemma3:4b={FAST:g}",
        f"--prompt-tokens-per-s={PROMPT_RATE:g}",
        f"--load-seconds={LOAD:g}",
        f"--response-tokens={TOKENS}",
    ]
    with simulator(tmp_path, *args) as url:
        env = env_for(redis_url, prefix, tmp_path / "home", url)
        proc = batchq(
            env,
            "bench",
            "--models",
            "qwen3:8b,gemma3:4b,no-such-model:1b",
            "--prompt",
            PROMPT,
            "--runs",
            str(RUNS),
            "--json",
        )
        # One request at Ollama at a time: none waited in its queue.
        assert sim_stats(url)["max_in_flight"] == 1
    out = json.loads(proc.stdout)
    assert (out["runs"], out["prompts"], out["workers"], out["concurrency"]) == (RUNS, 1, 1, 1)
    assert out["ollama_queue"] == 0  # latencies are the model's own, not time in its queue
    assert out["stream"] is True and out["ollama_version"] == "0.12.0"
    slow, fast, unknown = out["models"]
    assert [m["model"] for m in out["models"]] == ["qwen3:8b", "gemma3:4b", "no-such-model:1b"]
    assert fast["eval_tokens_per_s"] > 2 * slow["eval_tokens_per_s"]
    prompt_s = 20 / PROMPT_RATE
    for m, rate in ((slow, SLOW), (fast, FAST)):
        assert (m["requests"], m["succeeded"], m["failed"], m["errors"]) == (RUNS, RUNS, 0, {})
        assert m["eval_tokens_per_s"] == pytest.approx(rate, rel=0.15)
        assert m["prompt_tokens_per_s"] == pytest.approx(PROMPT_RATE, rel=0.15)
        assert m["eval_tokens_mean"] == TOKENS
        # The simulator serves one model at a time: each one's first request pays the load.
        assert LOAD * 0.95 <= m["load_max_s"] < LOAD + 0.2
        warm_first_token = prompt_s + 1 / rate
        cold, *warm = (r["ttft_s"] for r in m["runs"])
        assert LOAD + warm_first_token <= cold < LOAD + warm_first_token + 0.2
        assert all(warm_first_token <= t < warm_first_token + 0.15 for t in warm), warm
        warm_latency = prompt_s + TOKENS / rate
        assert m["latency_p50_s"] == pytest.approx(warm_latency, rel=0.15)
        assert m["latency_p50_s"] <= m["latency_p95_s"] < warm_latency + LOAD + 0.2
    assert (unknown["succeeded"], unknown["failed"]) == (0, RUNS)
    assert unknown["errors"] == {
        "model_not_found": {"count": RUNS, "message": "model 'no-such-model:1b' not found"}
    }
    assert unknown["eval_tokens_per_s"] is None and unknown["latency_p50_s"] is None


# -- a namespace of its own ----------------------------------------------------------------------


def _announce(store: BatchStore, worker_id: str, pid: int, endpoint: str) -> Any:
    info = WorkerInfo(worker_id, host=socket.gethostname(), pid=pid, endpoints=[endpoint])
    pipe = store.redis.pipeline(transaction=False)
    pipe.hset(store.keys.worker_info(worker_id), mapping=info.to_mapping())
    pipe.zadd(store.keys.workers, {worker_id: clock.now_ms() + 60_000})
    return pipe.execute()


async def test_the_endpoint_comes_from_the_namespaces_workers_all_of_them_benchs(
    store: BatchStore,
) -> None:
    await _announce(store, "ours", os.getpid(), "http://b:11434")
    assert await served_endpoints(store.redis, store.keys, {os.getpid()}) == ["http://b:11434"]
    await _announce(store, "stranger", os.getpid() + 1, "http://a:11434")
    with pytest.raises(BatchqError, match="worker stranger, which bench did not start"):
        await served_endpoints(store.redis, store.keys, {os.getpid()})


async def test_dropping_the_namespace_takes_its_keys_and_arqs_and_nothing_else(
    store: BatchStore,
) -> None:
    r, k = store.redis, store.keys
    bid, _ = await store.submit([Item("0", Endpoint.GENERATE, {"model": "m", "prompt": "p"})])
    queued, running = f"{bid}:0", f"{bid}:1"
    await r.zadd(k.queue, {queued: 0})
    await r.zadd(k.leases, {running: clock.now_ms()})
    arq = [p + j for j in (queued, running) for p in ("arq:job:", "arq:in-progress:", "arq:retry:")]
    await r.mset(dict.fromkeys(arq, "x"))
    beside = [f"{k.prefix}x:keep", f"{k.prefix}-other:b:{bid}", "arq:job:b_0000000000000000:0"]
    await r.mset(dict.fromkeys(beside, "x"))
    try:
        assert await drop_namespace(r, k) >= len(arq) + 2
        assert [key async for key in r.scan_iter(match=f"{k.prefix}:*")] == []
        assert await r.exists(*arq) == 0
        assert await r.exists(*beside) == len(beside)
    finally:
        await r.delete(*beside)


def _leftovers(redis_url: str, prefix: str, batch_ids: list[str]) -> list[bytes]:
    """Keys bench left behind: any outside the test's own namespace that start with its prefix
    (a namespace derived from it), and any that name one of its batches."""
    client = redis_sync.Redis.from_url(redis_url)
    try:
        keys = [k for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        left = [k for k in keys if not k.startswith(f"{prefix}:".encode())]
        for bid in batch_ids:
            left += list(client.scan_iter(match=f"*{bid}*", count=1000))
        return left
    finally:
        client.close()


@pytest.mark.e2e
def test_bench_runs_only_on_the_workers_it_starts(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    # A worker of someone else already serves this Redis and prefix, against another Ollama
    # that answers at once: if it could take bench items at all, it would take most of them.
    prompt = f"bench-only {prefix}"
    foreign_sim = SimConfig(models=("qwen3:8b",), eval_tokens_per_s=0, parallel=8)
    own_sim = SimConfig(models=("qwen3:8b",), eval_tokens_per_s=400, response_tokens=4)
    home = tmp_path / "home"
    with running_sim(foreign_sim) as other, running_sim(own_sim) as own:
        foreign_env = env_for(redis_url, prefix, home, other.url, BATCHQ_CONCURRENCY="8")
        foreign = Workers(foreign_env, tmp_path)
        foreign.start()
        wait_for_workers(foreign_env, 1, timeout=60)
        env = env_for(redis_url, prefix, home, own.url)
        argv = ["bench", "--models", "qwen3:8b", "--prompt", prompt]
        as_json = batchq(env, *argv, "--runs", "4", "--json")
        table = batchq(env, *argv, "--runs", "1")
        other_prompts, own_prompts = other.stats()["prompts"], own.stats()["prompts"]
        assert foreign.procs[0].poll() is None, foreign.logs()
        assert foreign.stop() == [0]
    assert other_prompts.get(prompt, 0) == 0, other_prompts
    assert own_prompts == {prompt: 5}
    out = json.loads(as_json.stdout)
    assert out["ollama_host"] == own.url
    (row,) = out["models"]
    assert (row["succeeded"], row["ollama_host"], row["ollama_version"]) == (4, own.url, "0.12.0")
    assert table.stdout.splitlines()[0] == f"Ollama 0.12.0 at {own.url}"
    assert _leftovers(redis_url, prefix, [row["batch_id"]]) == []


@pytest.mark.e2e
def test_interrupted_bench_stops_its_workers_and_leaves_no_keys(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    # Each request takes 4 s: the interrupt comes while one is at Ollama.
    with running_sim(SimConfig(eval_tokens_per_s=5, response_tokens=20)) as sim:
        env = env_for(redis_url, prefix, home, sim.url)
        err = tmp_path / "bench.err"
        argv = ["bench", "--models", "qwen3:8b", "--prompt", "slow", "--runs", "3"]
        with err.open("w") as err_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "batchq", *argv],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err_file,
                # Its own process group, as at a terminal: Ctrl-C reaches bench and its workers.
                start_new_session=True,
                preexec_fn=ctrl_c_reaches_it,
            )
            try:
                deadline = time.monotonic() + 60
                while sim.stats()["in_flight"] < 1:
                    assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
                    time.sleep(0.05)
                os.killpg(proc.pid, signal.SIGINT)
                assert proc.wait(90) == 130, err.read_text()
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    found = re.search(r"batch (b_[0-9a-f]{16})", err.read_text())
    assert found, err.read_text()
    assert _leftovers(redis_url, prefix, [found[1]]) == []
    (log,) = home.glob("logs/bench-*/worker-0.log")
    pid = re.search(r"worker \S+?:(\d+):[0-9a-f]+: Ollama", log.read_text())
    assert pid, log.read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid[1]), 0)
