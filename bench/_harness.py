"""Shared pieces of the benchmark scripts: the embedded Valkey, the simulator and worker
processes, prompt files, child-process timing with peak RSS, and the bare HTTP loops that serve
as baselines. Everything runs real processes over real sockets; nothing here is mocked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import httpx
import redis

from batchq.backends.ollama import OllamaClient
from batchq.local.runner import stop_processes
from batchq.records import Endpoint, Item
from batchq.store.embedded import EmbeddedServer
from batchq.store.keys import Keys

PY = sys.executable
MODEL = "llama3.2"  # a model the simulator serves
_FILLER = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine_info() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def median_time(fn: Callable[[], object], n: int) -> float:
    """Median seconds of ``n`` calls of ``fn``."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# -- prompts --------------------------------------------------------------------------------


def prompt_text(i: int, size: int = 500) -> str:
    head = f"prompt {i}: "
    body = (_FILLER * (size // len(_FILLER) + 1))[: max(size - len(head), 0)]
    return head + body


def write_prompts(path: Path, n: int, size: int = 500) -> int:
    """A JSONL file of ``n`` prompt strings; returns the prompts' total UTF-8 bytes."""
    total = 0
    with path.open("w", encoding="utf-8") as f:
        buf: list[str] = []
        for i in range(n):
            p = prompt_text(i, size)
            total += len(p.encode())
            buf.append(json.dumps(p))
            if len(buf) >= 10_000:
                f.write("\n".join(buf) + "\n")
                buf = []
        if buf:
            f.write("\n".join(buf) + "\n")
    return total


# -- child processes ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildRun:
    seconds: float
    max_rss_mb: float  # the child's own peak resident set
    returncode: int
    stdout: str
    stderr: str

    def check(self, what: str) -> ChildRun:
        if self.returncode != 0:
            raise RuntimeError(f"{what} exited {self.returncode}: {self.stderr.strip()[-500:]}")
        return self


# GNU time reports the peak RSS of a child it forked itself. rusage from our own wait4 (or
# RUSAGE_CHILDREN) would not do: Linux carries the forking process's peak RSS into the child's
# ru_maxrss across exec, so every child would look at least as big as this script.
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run_child(args: Sequence[str], env: dict[str, str] | None = None) -> ChildRun:
    """Run a process to the end; its wall time and peak RSS."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile(mode="r") as rss,
    ):
        cmd = [TIME, "-f", "%M", "-o", rss.name, *args] if TIME else list(args)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        # Without GNU time, an upper bound (see above).
        kib = int(rss.read().split()[-1]) if TIME else usage.ru_maxrss
        out.seek(0)
        err.seek(0)
        return ChildRun(
            seconds=seconds,
            max_rss_mb=kib / 1024,
            returncode=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def answers(url: str, tries: int = 400) -> bool:
    """Whether ``url`` answers a GET (any status) within ``tries`` attempts 50 ms apart: a
    server process just started is up."""
    for _ in range(tries):
        try:
            httpx.get(url, timeout=1)
            return True
        except httpx.HTTPError:
            time.sleep(0.05)
    return False


def batchq_cmd(*args: str) -> list[str]:
    return [PY, "-m", "batchq", *args]


class Sim:
    """The simulator (``batchq sim``) as its own process, for the duration of a ``with``."""

    def __init__(
        self, log: Path, *, parallel: int, latency: float, extra: Sequence[str] = ()
    ) -> None:
        self.log, self.parallel, self.latency = log, parallel, latency
        self.extra = list(extra)  # more of the simulator's flags
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Sim:
        args = ["--port", str(self.port), "--parallel", str(self.parallel)]
        args += ["--latency", str(self.latency)]
        args += ["--eval-tokens-per-s", "0", "--prompt-tokens-per-s", "0", *self.extra]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                batchq_cmd("sim", *args), stdout=log, stderr=subprocess.STDOUT
            )
        if answers(f"{self.url}/api/version"):
            return self
        self.__exit__()
        raise RuntimeError(f"simulator did not start; see {self.log}")

    def cpu_s(self) -> float:
        """CPU seconds the simulator has used so far."""
        return proc_cpu_s(self.proc.pid) if self.proc is not None else 0.0

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Lab:
    """A temp dir with its own embedded Valkey; every scenario uses its own key prefix."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.server = EmbeddedServer(self.home)
        self.url = self.server.ensure()
        self.r = redis.Redis.from_url(self.url)

    def close(self) -> None:
        self.r.close()
        self.server.stop()

    def env(self, prefix: str, *, ollama: str = "", concurrency: int | str = 4) -> dict[str, str]:
        env = dict(os.environ, BATCHQ_REDIS_URL=self.url, BATCHQ_PREFIX=prefix)
        env |= {"BATCHQ_HOME": str(self.home), "BATCHQ_CONCURRENCY": str(concurrency)}
        if ollama:
            env["OLLAMA_HOST"] = ollama
        return env

    def info(self, section: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.r.info(section))

    def server_counters(self) -> tuple[float, int]:
        """Valkey's CPU seconds and commands processed so far (for per-item figures)."""
        cpu, stats = self.info("cpu"), self.info("stats")
        used = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        return used, int(stats["total_commands_processed"])

    def used_memory(self) -> int:
        return int(self.info("memory")["used_memory"])

    def quiesce(self, timeout: float = 120.0) -> None:
        """Wait out an AOF rewrite (a fork on a 2-core box) before a timed section, and
        background frees before a memory reading."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p, m = self.info("persistence"), self.info("memory")
            busy = int(p.get("aof_rewrite_in_progress", 0)) + int(p.get("aof_rewrite_scheduled", 0))
            if not busy and not int(m.get("lazyfree_pending_objects", 0)):
                return
            time.sleep(0.1)

    def meta(self, prefix: str, batch_id: str) -> dict[str, str]:
        raw = cast(dict[bytes, bytes], self.r.hgetall(f"{prefix}:b:{batch_id}"))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def key_bytes(self, prefix: str, batch_id: str) -> dict[str, int]:
        """MEMORY USAGE (every field counted) of each of a batch's keys that exist."""
        keys = Keys(prefix).batch(batch_id)
        out = {}
        for name in ("meta", "items", "results", "redo", "tries"):
            usage = self.r.memory_usage(getattr(keys, name), samples=0)
            if usage is not None:
                out[name] = int(cast(int, usage))
        return out

    def submit(self, prefix: str, path: Path) -> tuple[str, ChildRun]:
        cmd = batchq_cmd("submit", str(path), "--model", MODEL, "--json")
        run = run_child(cmd, self.env(prefix)).check("batchq submit")
        return str(json.loads(run.stdout)["batch_id"]), run

    def wait_done(self, prefix: str, batch_id: str, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        key = f"{prefix}:b:{batch_id}"
        while self.r.hget(key, "finished_at") is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} not finished within {timeout:.0f} s")
            time.sleep(0.02)
        return self.meta(prefix, batch_id)

    @contextlib.contextmanager
    def workers(
        self,
        prefix: str,
        count: int,
        *,
        ollama: str,
        concurrency: int | str,
        extra_env: dict[str, str] | None = None,
    ) -> Iterator[Workers]:
        """``count`` worker processes, registered (start-up done) before the block runs;
        ``extra_env`` adds settings of their own (``BATCHQ_...``)."""
        env = self.env(prefix, ollama=ollama, concurrency=concurrency) | (extra_env or {})
        group = Workers()
        logs: list[IO[bytes]] = []
        try:
            for n in range(count):
                log = (self.logs / f"{prefix}-worker-{n}.log").open("ab")
                logs.append(log)
                group.procs.append(
                    subprocess.Popen(
                        batchq_cmd("worker"),
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
            deadline = time.monotonic() + 60
            while int(cast(int, self.r.zcard(f"{prefix}:workers"))) < count:
                if time.monotonic() > deadline or any(p.poll() is not None for p in group.procs):
                    raise RuntimeError(f"workers did not start; see {self.logs}")
                time.sleep(0.05)
            yield group
        finally:
            stop_processes(group.procs, grace_s=40)
            for f in logs:
                f.close()


@dataclass
class Workers:
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cpu_s(self) -> float:
        """CPU seconds the live workers have used so far (compare two readings)."""
        return sum(proc_cpu_s(p.pid) for p in self.procs if p.poll() is None)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_s() -> float:
    """CPU seconds of this process so far."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def makespan_s(meta: dict[str, str]) -> float:
    """From the first item's start to the batch's end (epoch ms in the batch meta)."""
    return (int(meta["finished_at"]) - int(meta["started_at"])) / 1000


# -- baselines ------------------------------------------------------------------------------


async def http_loop(
    url: str, prompts: Sequence[str], *, concurrency: int, delay: float = 0.0
) -> float:
    """Every prompt as one streamed ``/api/generate`` call through batchq's own Ollama client
    (the same HTTP calls a worker makes), at most ``concurrency`` at a time, optionally
    sleeping ``delay`` inside the semaphore first; returns the seconds taken."""
    sem = asyncio.Semaphore(concurrency)
    async with OllamaClient(url, timeout=120, max_connections=concurrency) as client:

        async def one(i: int, prompt: str) -> None:
            async with sem:
                if delay:
                    await asyncio.sleep(delay)
                await client.send(
                    Item(str(i), Endpoint.GENERATE, {"model": MODEL, "prompt": prompt})
                )

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
        return time.perf_counter() - t0
