"""``results --wait`` and ``status --watch`` with no live worker: as processes, they say so on
stderr after a while, keep waiting, and finish once a real worker (against the simulator over
a socket) has run the batch."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from batchq.sim.process import SimConfig, running_sim
from batchq.store.presence import NO_WORKERS_NOTICE
from tests.procs import Workers, batchq, env_for


class Follow:
    """A command as a process, its stderr read line by line as it comes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        cmd = [sys.executable, "-m", "batchq", *args]
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr
        for line in self.proc.stderr:
            self.err.append(line)

    def wait_for_stderr(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.err):
            assert self.proc.poll() is None, (self.proc.returncode, self.err)
            assert time.monotonic() < deadline, self.err
            time.sleep(0.05)

    def finish(self, timeout: float = 120) -> str:
        out, _ = self.proc.communicate(timeout=timeout)
        self._reader.join(10)
        return out

    def __enter__(self) -> Follow:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def notices(self) -> list[str]:
        return [line for line in self.err if NO_WORKERS_NOTICE in line]


def _run_without_then_with_a_worker(
    valkey_url: str, prefix: str, tmp_path: Path, *command: str
) -> tuple[str, str]:
    """Submit 5 prompts and run ``command`` (``{bid}`` in it: the batch id) with no worker
    until it gives notice, still running; then a worker runs the batch. Returns the batch id
    and what the command printed, once it exited 0 having given notice once."""
    with running_sim(SimConfig(parallel=4)) as sim:
        env = env_for(valkey_url, prefix, tmp_path, sim.url)
        src = tmp_path / "in.txt"
        src.write_text("".join(f"prompt {i}\n" for i in range(5)))
        bid = batchq(env, "submit", str(src), "--model", "llama3.2").stdout.strip()
        with Follow(env, *(arg.format(bid=bid) for arg in command)) as follow:
            follow.wait_for_stderr(NO_WORKERS_NOTICE)
            with Workers(env, tmp_path) as workers:
                assert workers.start("--burst").wait(120) == 0
            out = follow.finish()
    assert follow.proc.returncode == 0, follow.err
    assert follow.notices() == [f"batchq: {NO_WORKERS_NOTICE}; still waiting\n"]
    return bid, out


@pytest.mark.e2e
def test_results_wait_says_no_worker_is_live_and_keeps_waiting(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    results = tmp_path / "out.jsonl"
    command = ("results", "{bid}", "--wait", "-o", str(results))
    _run_without_then_with_a_worker(valkey_url, prefix, tmp_path, *command)
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["index"], r["status"]) for r in lines] == [(i, "succeeded") for i in range(5)]


@pytest.mark.e2e
def test_watch_says_no_worker_is_live_and_keeps_watching(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    command = ("status", "{bid}", "--watch", "--interval", "0.2")
    bid, out = _run_without_then_with_a_worker(valkey_url, prefix, tmp_path, *command)
    lines = out.splitlines()
    # A line per refresh on stdout; the notice on stderr only.
    assert all(line.startswith(bid) for line in lines) and len(lines) > 2
    assert " completed 5/5 " in lines[-1]
