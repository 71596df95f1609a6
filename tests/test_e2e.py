"""End to end with real processes: the ``batchq`` CLI, worker processes (``batchq worker`` and
arq's own CLI), a real server, and the simulator in its own process over a real socket.
Each result is checked against its own prompt."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchq.sim.process import expected_response
from tests.conftest import free_port
from tests.procs import Workers, batchq, env_for, simulator, wait_done

pytestmark = pytest.mark.e2e

SEED = 3


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = [
        "--seed",
        str(SEED),
        "--parallel",
        "16",
        "--eval-tokens-per-s",
        "0",
        "--prompt-tokens-per-s",
        "0",
        "--fail-503",
        "0.08",
        "--fail-500",
        "0.04",
        "--fail-midstream",
        "0.04",
    ]
    with simulator(tmp_path_factory.mktemp("sim"), *args) as url:
        yield url


def write_mixed_input(path: Path, n: int) -> list[dict[str, Any]]:
    """n lines of every accepted shape; returns what each result must be."""
    expect: list[dict[str, Any]] = []
    with path.open("w") as f:
        for i in range(n):
            kind = i % 6
            if kind == 0:
                f.write(json.dumps(f"plain prompt {i}") + "\n")
                expect.append({"cid": str(i), "model": "llama3.2", "prompt": f"plain prompt {i}"})
            elif kind == 1:
                line = {
                    "custom_id": f"g-{i}",
                    "prompt": f"gen {i}",
                    "system": "be brief",
                    "options": {"temperature": 0},
                    "model": "gemma3:4b",
                }
                f.write(json.dumps(line) + "\n")
                expect.append({"cid": f"g-{i}", "model": "gemma3:4b", "prompt": f"gen {i}"})
            elif kind == 2:
                msgs = [
                    {"role": "system", "content": "sys"},
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": f"c {i}"},
                ]
                f.write(json.dumps({"messages": msgs}) + "\n")
                expect.append({"cid": str(i), "model": "llama3.2", "prompt": f"c {i}"})
            elif kind == 3:
                line = {
                    "custom_id": f"oa-{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": "qwen3:8b",
                        "max_tokens": 3,
                        "messages": [{"role": "user", "content": f"openai {i}"}],
                    },
                }
                f.write(json.dumps(line) + "\n")
                expect.append(
                    {"cid": f"oa-{i}", "model": "qwen3:8b", "prompt": f"openai {i}", "tokens": 3}
                )
            elif kind == 4:
                f.write(json.dumps({"prompt": f"lost {i}", "model": "no-such-model"}) + "\n")
                expect.append({"cid": str(i), "model": "no-such-model", "fail": 404})
            else:
                f.write(json.dumps({"custom_id": f"x{i}", "prompt": f"x {i}"}) + "\n")
                expect.append({"cid": f"x{i}", "model": "llama3.2", "prompt": f"x {i}"})
    return expect


def check_results(out: Path, expect: list[dict[str, Any]]) -> None:
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(len(expect)))
    for r, e in zip(rows, expect, strict=True):
        assert r["custom_id"] == e["cid"] and r["model"] == e["model"], r
        if "fail" in e:
            assert r["status"] == "failed" and r["response"] is None
            assert r["error"]["status_code"] == e["fail"] and r["attempts"] == 1
            assert r["error"]["message"] == f"model '{e['model']}' not found"
        else:
            assert r["status"] == "succeeded", r
            want = expected_response(e["model"], e["prompt"], seed=SEED, tokens=e.get("tokens", 8))
            assert r["response"] == want
            assert r["error"] is None and r["attempts"] >= 1
            assert r["metrics"]["eval_count"] == e.get("tokens", 8)
            assert r["metrics"]["done_reason"] == ("length" if "tokens" in e else "stop")


def test_submit_workers_status_results(
    redis_url: str, prefix: str, tmp_path: Path, sim_url: str
) -> None:
    env = env_for(redis_url, prefix, tmp_path / "home", sim_url)
    src = tmp_path / "prompts.jsonl"
    expect = write_mixed_input(src, 300)
    sub = json.loads(batchq(env, "submit", str(src), "--model", "llama3.2", "--json").stdout)
    assert sub["total"] == 300
    bid = sub["batch_id"]
    workers = Workers(env, tmp_path)
    for _ in range(2):
        workers.start("--concurrency", "8")
    try:
        status = wait_done(env, bid)
    finally:
        codes = workers.stop()
    assert codes == [0, 0], workers.logs()
    assert status["state"] == "completed"
    assert (status["succeeded"], status["failed"]) == (250, 50)
    out = tmp_path / "results.jsonl"
    batchq(env, "results", bid, "-o", str(out))
    check_results(out, expect)
    listed = json.loads(batchq(env, "list", "--json").stdout)
    assert [b["batch_id"] for b in listed] == [bid]


def test_run_all_in_one_with_txt_input(
    redis_url: str, prefix: str, tmp_path: Path, sim_url: str
) -> None:
    env = env_for(redis_url, prefix, tmp_path / "home", sim_url)
    src = tmp_path / "prompts.txt"
    src.write_text("".join(f"line {i}\n" + ("\n" if i % 10 == 0 else "") for i in range(60)))
    out = tmp_path / "out.jsonl"
    proc = batchq(
        env, "run", str(src), "-o", str(out), "--model", "llama3.2", "--workers", "2", "--json"
    )
    status = json.loads(proc.stdout)
    assert (status["succeeded"], status["total"], status["state"]) == (60, 60, "completed")
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["response"] for r in rows] == [
        expected_response("llama3.2", f"line {i}", seed=SEED) for i in range(60)
    ]


def test_arq_cli_runs_a_working_worker(
    redis_url: str, prefix: str, tmp_path: Path, sim_url: str
) -> None:
    env = env_for(redis_url, prefix, tmp_path / "home", sim_url)
    env["BATCHQ_CONCURRENCY"] = "4"
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(f"arq {i}") + "\n" for i in range(20)))
    bid = batchq(env, "submit", str(src), "--model", "llama3.2").stdout.strip()
    arq = Path(sys.executable).parent / "arq"
    with Workers(env, tmp_path) as workers:
        workers.start(cmd=[str(arq), "workers.WorkerSettings"])
        status = wait_done(env, bid)
    assert status["succeeded"] == 20


def test_cancel_stops_dispatch(redis_url: str, prefix: str, tmp_path: Path, sim_url: str) -> None:
    env = env_for(redis_url, prefix, tmp_path / "home", sim_url)
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(f"c {i}") + "\n" for i in range(500)))
    bid = batchq(env, "submit", str(src), "--model", "llama3.2").stdout.strip()
    cancelled = json.loads(batchq(env, "cancel", bid, "--json").stdout)
    assert (cancelled["state"], cancelled["cancelled"]) == ("cancelled", 500)
    assert cancelled["finished_at"]
    out = tmp_path / "r.jsonl"
    batchq(env, "results", bid, "-o", str(out), "--wait")
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 500 and {r["status"] for r in rows} == {"cancelled"}


def test_cli_errors_are_one_line(redis_url: str, prefix: str, tmp_path: Path) -> None:
    env = env_for(redis_url, prefix, tmp_path / "home", "http://127.0.0.1:9")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\n{"prompt": 5}\n')
    proc = batchq(env, "submit", str(bad), "--model", "m", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "line 2" in proc.stderr
    assert "prompt" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(batchq(env, "list", "--json").stdout) == []
    proc = batchq(env, "status", "b_0123456789abcdef", check=False)
    assert proc.returncode == 1 and "no batch with id 'b_0123456789abcdef'" in proc.stderr
    env["BATCHQ_REDIS_URL"] = f"redis://:secret@127.0.0.1:{free_port()}"
    proc = batchq(env, "status", check=False)
    assert proc.returncode == 1 and "cannot reach Redis" in proc.stderr
    assert "secret" not in proc.stderr and "Traceback" not in proc.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    proc = batchq(
        env_for(redis_url, prefix, tmp_path / "h", "x"), "submit", str(empty), check=False
    )
    assert proc.returncode == 1 and "no items" in proc.stderr
