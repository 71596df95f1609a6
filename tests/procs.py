"""Real processes for end-to-end and fault tests: the CLI, workers and the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from batchq.store.batches import BatchStore
from batchq.store.connection import connect
from batchq.store.keys import Keys
from tests.conftest import free_port
from tests.waits import wait_for_value, wait_until


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


def faketime_lib() -> str | None:
    """libfaketime (Debian's package faketime), which shifts a process's wall clock."""
    for pattern in (
        "/usr/lib/*/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def skewed(env: dict[str, str], offset: str) -> dict[str, str]:
    """``env`` for a process whose wall clock is ``offset`` (``+2h``, ``-2h``) off the machine's,
    as on another machine; its monotonic clock is left alone. The library is preloaded, not
    run through the ``faketime`` command, which would stand between a signal and the process."""
    lib = faketime_lib()
    if lib is None:
        pytest.skip("libfaketime is not installed (Debian package faketime)")
    return {**env, "LD_PRELOAD": lib, "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


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


def ctrl_c_reaches_it() -> None:
    """A ``preexec_fn``: Ctrl-C does what it does at a terminal, even when the suite itself was
    started in the background (``nohup ... &``), whose children inherit SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
        preexec_fn=ctrl_c_reaches_it,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        yield proc, proc.stdout, proc.stderr


def status(env: dict[str, str], batch_id: str) -> dict[str, Any]:
    s: dict[str, Any] = json.loads(batchq(env, "status", batch_id, "--json").stdout)
    counts = [s[k] for k in ("queued", "running", "succeeded", "failed", "cancelled", "expired")]
    assert sum(counts) == s["total"], s
    return s


def read_status(env: dict[str, str], batch_id: str) -> dict[str, Any]:
    """The batch's status as ``status`` gives it, read in-process: for polling. Through the CLI
    each read costs a second of CPU, which on a loaded machine is taken from the workers being
    waited for, and a poll that slow misses short-lived states."""

    async def read() -> dict[str, Any]:
        client = connect(env["BATCHQ_REDIS_URL"])
        try:
            s = await BatchStore(client, Keys(env["BATCHQ_PREFIX"])).status(batch_id)
        finally:
            await client.aclose()
        return s.model_dump(mode="json")

    return asyncio.run(read())


def wait_for(
    env: dict[str, str],
    batch_id: str,
    ok: Callable[[dict[str, Any]], bool],
    timeout: float = 120,
    interval: float = 0.05,
) -> dict[str, Any]:
    """Poll the batch (in-process) until its status satisfies ``ok``; returns that status."""
    return wait_for_value(
        lambda: read_status(env, batch_id), ok, timeout=timeout, interval=interval, what=batch_id
    )


def wait_count(
    env: dict[str, str], batch_id: str, field: str, at_least: int, timeout: float = 120
) -> dict[str, Any]:
    """Poll the batch until its ``field`` count reaches ``at_least``."""
    return wait_for(env, batch_id, lambda s: bool(s[field] >= at_least), timeout)


def wait_done(env: dict[str, str], batch_id: str, timeout: float = 180) -> dict[str, Any]:
    """Poll the batch until it is finished; returns its final status as the CLI prints it."""
    wait_for(env, batch_id, lambda s: bool(s["finished_at"]), timeout, interval=0.2)
    return status(env, batch_id)


@contextlib.contextmanager
def simulator(log_dir: Path, *args: str, port: int | None = None) -> Iterator[str]:
    """``batchq sim`` in its own process; yields its URL."""
    port = port or free_port()
    with ollama_process(["batchq", "sim", *args], log_dir / f"sim-{port}.log", port) as url:
        yield url


@contextlib.contextmanager
def ollama_process(
    module_args: list[str], log_path: Path, port: int, cwd: Path | None = None
) -> Iterator[str]:
    """``python -m MODULE_ARGS --port PORT``, a server that plays Ollama, in its own process;
    yields its URL once it answers."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", *module_args, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(
                lambda: bool(httpx.get(url + "/api/version", timeout=5).status_code),
                timeout=60,
                interval=0.1,
                what=f"{module_args[0]} started",
                ignore=(httpx.HTTPError,),
            )
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

    def start(
        self, *args: str, cmd: list[str] | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A worker with ``args``; ``env`` replaces the group's environment for this one."""
        n = len(self.procs)
        with (self.log_dir / f"worker-{n}.log").open("w") as log:
            proc = subprocess.Popen(
                cmd or [sys.executable, "-m", "batchq", "worker", *args],
                env=env or self.env,
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
