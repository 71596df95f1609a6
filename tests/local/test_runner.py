from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import cast

import pytest
from pydantic import SecretStr
from rich.console import Console

from batchq import clock
from batchq.local.runner import settings_env, watch_progress
from batchq.records import BatchState, BatchStatus
from batchq.settings import Settings
from batchq.sim.process import SimConfig, running_sim
from batchq.store.batches import BatchStore
from batchq.store.embedded import EmbeddedServer
from tests.procs import batchq, env_for


def test_local_workers_get_the_settings_but_no_metrics_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Inherited from the user's environment, it would make every local worker but one fail.
    monkeypatch.setenv("BATCHQ_METRICS_PORT", "9465")
    env = settings_env(Settings(concurrency=7, metrics_port=9466), "redis://h:1/0")
    assert "BATCHQ_METRICS_PORT" not in env
    assert env["BATCHQ_CONCURRENCY"] == "7" and env["BATCHQ_REDIS_URL"] == "redis://h:1/0"


def test_local_workers_get_the_webhook_secret_itself_not_its_mask() -> None:
    secret = "whsec_" + "a" * 44
    env = settings_env(Settings(webhook_secret=SecretStr(secret)), "redis://h:1/0")
    assert env["BATCHQ_WEBHOOK_SECRET"] == secret
    assert "BATCHQ_WEBHOOK_SECRET" not in settings_env(
        Settings(webhook_secret=None), "redis://h:1/0"
    )


class CountingStore:
    """A batch of 100 items that gains 10 final items at each poll, one second apart."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.done = -10

    async def status(self, batch_id: str) -> BatchStatus:
        self.clock[0] += 1.0
        self.done = min(100, self.done + 10)
        return BatchStatus(
            batch_id=batch_id,
            name=None,
            state=BatchState.COMPLETED if self.done == 100 else BatchState.RUNNING,
            total=100,
            queued=100 - self.done,
            running=0,
            succeeded=self.done,
            failed=0,
            cancelled=0,
            created_at=None,
            started_at=None,
            finished_at="2026-01-01T00:00:00+00:00" if self.done == 100 else None,
        )


async def test_run_bar_shows_an_eta_at_the_pace_then_the_time_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    monkeypatch.setattr(clock, "monotonic", lambda: now[0])
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    store = CountingStore(now)
    status = await watch_progress(
        cast(BatchStore, store), "b_1", console=console, show=True, interval=0
    )
    assert status.done == 100
    # Each redraw of the line, as "done/total" -> its time column.
    frames = [f.strip() for f in out.getvalue().split("\r\x1b[2K")[1:]]
    parsed = [re.fullmatch(r"b_1 [━╸╺ ]*(\d+/100) ok .* ((?:ETA|took) \S+)", f) for f in frames]
    shown = {m[1]: m[2] for m in parsed if m}
    assert len(shown) == 11, frames
    # 10 items a second from the first result on: after 20 of 100, 8 s are left.
    assert (shown["0/100"], shown["10/100"], shown["20/100"]) == ("ETA -", "ETA -", "ETA 8s")
    assert shown["90/100"] == "ETA 1s"
    assert shown["100/100"] == "took 10.0s"  # not a countdown's "0:00:00"


def test_run_ends_with_the_time_taken_and_the_pace(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    src, out = tmp_path / "p.jsonl", str(tmp_path / "out.jsonl")
    src.write_text("".join(json.dumps(f"prompt {i}") + "\n" for i in range(5)))
    with running_sim(SimConfig(parallel=4, eval_tokens_per_s=0)) as sim:
        env = env_for(valkey_url, prefix, tmp_path / "home", sim.url)
        proc = batchq(env, "run", str(src), "-o", out, "--model", "llama3.2")
        again = batchq(env, "run", str(src), "-o", out, "--model", "llama3.2", "--json")
    last = proc.stderr.splitlines()[-1]
    m = re.fullmatch(
        rf"5 succeeded, 0 failed in (\d+\.\d)s \((\d+\.\d) items/s\); 5 results in {out}", last
    )
    assert m, proc.stderr
    # Both are rounded to 0.1: the pace must be 5 items over some time that rounds to the one shown.
    shown_s, pace = float(m[1]), float(m[2])
    assert 5 / (shown_s + 0.05) - 0.05 <= pace <= 5 / max(shown_s - 0.05, 0.01) + 0.05, last
    summary = json.loads(again.stdout)
    assert summary["succeeded"] == 5 and summary["elapsed_s"] > 0
    assert summary["items_per_s"] == pytest.approx(5 / summary["elapsed_s"], rel=0.01)


def test_run_on_the_embedded_server_gives_its_workers_the_password_unprinted(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    src, out = tmp_path / "p.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(f"prompt {i}") + "\n" for i in range(5)))
    env = {k: v for k, v in env_for("", "", home, "").items() if not k.startswith("BATCHQ_")}
    env.pop("REDIS_URL", None)
    env["BATCHQ_HOME"] = str(home)
    try:
        with running_sim(SimConfig(parallel=4, eval_tokens_per_s=0)) as sim:
            env["OLLAMA_HOST"] = sim.url
            args = ["run", str(src), "-o", str(out), "--model", "llama3.2", "--workers", "2"]
            proc = batchq(env, *args)
        password = (home / "valkey.password").read_text().strip()
        assert [json.loads(line)["status"] for line in out.read_text().splitlines()] == [
            "succeeded"
        ] * 5
        logs = [p.read_text() for p in (home / "logs").glob("*/worker-*.log")]
        # A worker told to stop while it starts may end before its first line: the run's
        # items can all be done by then. Every worker that said where Redis is said it masked.
        said = [log for log in logs if "redis redis://" in log]
        assert len(logs) == 2 and said, logs
        assert all("redis redis://***@127.0.0.1:" in log for log in said)
        assert all(password not in text for text in [proc.stdout, proc.stderr, *logs])
    finally:
        EmbeddedServer(home).stop()
