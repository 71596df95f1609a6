"""``batchq run``: everything on one machine — Redis (embedded unless configured), N worker
processes, submission, a progress bar, and the results file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

from batchq import clock
from batchq.backends.pool import open_backend
from batchq.errors import BackendError
from batchq.monitor.tables import format_duration
from batchq.monitor.watch import Rates
from batchq.records import BatchStatus
from batchq.settings import Settings
from batchq.store.batches import BatchStore

__all__ = [
    "check_ollama",
    "elapsed_text",
    "settings_env",
    "start_workers",
    "stop_processes",
    "watch_progress",
]


def settings_env(settings: Settings, redis_url: str) -> dict[str, str]:
    """The environment that gives a child process exactly these settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        # One port cannot serve several local workers' metrics.
        if value is None or name == "metrics_port":
            env.pop(f"BATCHQ_{name.upper()}", None)
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()  # its str() is a mask
        env[f"BATCHQ_{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    env["BATCHQ_REDIS_URL"] = redis_url
    env["BATCHQ_OLLAMA_HOST"] = settings.ollama_host
    return env


@contextmanager
def start_workers(
    settings: Settings, redis_url: str, count: int, log_dir: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` worker processes for the duration of the block, then SIGTERM and wait."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = settings_env(settings, redis_url)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    try:
        for n in range(count):
            log_file = open(log_dir / f"worker-{n}.log", "ab")  # noqa: SIM115 - closed below
            logs.append(log_file)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "batchq", "worker"],
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
        yield procs
    finally:
        stop_processes(procs, grace_s=30)
        for f in logs:
            f.close()


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], *, grace_s: float) -> None:
    """SIGTERM to all at once (they finish their requests in parallel), then wait for each;
    SIGKILL to one still running after ``grace_s``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def check_ollama(settings: Settings) -> str:
    async with open_backend(settings.ollama_hosts[0], timeout=10) as backend:
        return await backend.version()


def elapsed_text(seconds: float) -> str:
    """A run's duration: tenths of a second below a minute, else as ``format_duration``."""
    return f"{seconds:.1f}s" if seconds < 60 else format_duration(seconds)


class _TimeColumn(ProgressColumn):
    """``ETA`` at the pace of the last minute (the one ``status --watch`` shows) while the batch
    runs, then how long it took. rich's TimeRemainingColumn ends on a useless ``0:00:00``, and
    forgets its pace after 30 s without a finished item, which long generations often are."""

    def render(self, task: Task) -> Text:
        if task.finished and task.finished_time is not None:
            return Text("took " + elapsed_text(task.finished_time), style="progress.elapsed")
        return Text("ETA " + format_duration(task.fields["eta"]), style="progress.remaining")


async def watch_progress(
    store: BatchStore,
    batch_id: str,
    *,
    console: Console,
    show: bool,
    workers: list[subprocess.Popen[bytes]] | None = None,
    interval: float = 0.5,
) -> BatchStatus:
    """Poll the batch's counters until it is finished, drawing a bar when ``show``."""
    status = await store.status(batch_id)
    rates = Rates()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "ok {task.fields[ok]}  failed {task.fields[failed]}  running {task.fields[run]}"
        ),
        _TimeColumn(),
        console=console,
        disable=not show,
        transient=False,
        # Drawn at each poll: nothing on the line changes between two.
        auto_refresh=False,
        get_time=clock.monotonic,
    ) as bar:
        task = bar.add_task(batch_id, total=status.total, ok=0, failed=0, run=0, eta=None)
        while True:
            status = await store.status(batch_id)
            done = status.done
            if done:  # the pace starts at the first result, not at the workers' start-up
                rates.add(clock.monotonic(), {"done": float(done)})
            pace, left = rates.rate("done"), status.total - done
            bar.update(
                task,
                completed=done,
                ok=status.succeeded,
                failed=status.failed,
                run=status.running,
                eta=left / pace if pace else None,
                refresh=True,
            )
            if status.finished_at:
                return status
            if workers and all(p.poll() is not None for p in workers):
                codes = [p.returncode for p in workers]
                raise BackendError(
                    f"all worker processes exited (codes {codes}); see their logs",
                    kind="workers_died",
                )
            await asyncio.sleep(interval)
