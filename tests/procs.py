"""Real processes for end-to-end and fault tests: the CLI, workers and the simulator."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx

from tests.conftest import free_port


def env_for(redis_url: str, prefix: str, home: Path, ollama: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHQ_", "OLLAMA_"))}
    env.update(
        BATCHQ_REDIS_URL=redis_url,
        BATCHQ_PREFIX=prefix,
        BATCHQ_HOME=str(home),
        OLLAMA_HOST=ollama,
        BATCHQ_RETRY_DELAY="0.05",
        BATCHQ_RETRY_MAX_DELAY="0.5",
        BATCHQ_MAX_ATTEMPTS="25",
        BATCHQ_HEARTBEAT="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def batchq(env: dict[str, str], *args: str, check: bool = True, **kw: Any) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", "batchq", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@contextlib.contextmanager
def piped(
    env: dict[str, str], *args: str
) -> Iterator[tuple[subprocess.Popen[str], IO[str], IO[str]]]:
    """``batchq ARGS`` running, with its stdout and stderr read through pipes."""
    with subprocess.Popen(
        [sys.executable, "-m", "batchq", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        yield proc, proc.stdout, proc.stderr


def status(env: dict[str, str], batch_id: str) -> dict[str, Any]:
    s: dict[str, Any] = json.loads(batchq(env, "status", batch_id, "--json").stdout)
    counts = [s[k] for k in ("queued", "running", "succeeded", "failed", "cancelled", "expired")]
    assert sum(counts) == s["total"], s
    return s


def wait_count(
    env: dict[str, str], batch_id: str, field: str, at_least: int, timeout: float = 60
) -> dict[str, Any]:
    """Poll the batch until its ``field`` count reaches ``at_least``."""
    deadline = time.monotonic() + timeout
    while (s := status(env, batch_id))[field] < at_least:
        assert time.monotonic() < deadline, s
        time.sleep(0.05)
    return s


def wait_done(env: dict[str, str], batch_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        s = status(env, batch_id)
        if s["finished_at"]:
            return s
        assert time.monotonic() < deadline, s
        time.sleep(0.3)


@contextlib.contextmanager
def simulator(log_dir: Path, *args: str, port: int | None = None) -> Iterator[str]:
    """``batchq sim`` in its own process; yields its URL."""
    port = port or free_port()
    with (log_dir / f"sim-{port}.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchq", "sim", "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    httpx.get(url + "/api/version", timeout=1)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, "simulator did not start"
                    time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def sim_stats(url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(url + "/_sim/stats", timeout=5).json()
    return stats


class Workers:
    """Worker processes with logs under ``log_dir``; stopped (SIGTERM) on exit."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, cmd: list[str] | None = None) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        with (self.log_dir / f"worker-{n}.log").open("w") as log:
            proc = subprocess.Popen(
                cmd or [sys.executable, "-m", "batchq", "worker", *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.log_dir,
            )
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.log_dir.glob("worker-*.log")))

    def stop(self) -> list[int]:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(60))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        return codes

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
