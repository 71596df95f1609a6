"""``batchq bench``: the same prompts on several models, through the queue, side by side.

Each model gets one batch of ``runs`` x prompts items, and the models run one after another so
that they never share the GPU. Every figure comes from the metrics stored with each result:
Ollama's own counts and durations (nanoseconds) and the time to first token that batchq measures
on streamed replies. Speeds are token-weighted within a run (all tokens over all time) and then
averaged over runs; latency percentiles pool every successful request of the model.

The batches run in a namespace of their own (:mod:`batchq.store.namespace`), which only the workers
bench starts serve: no other worker on the same Redis can take an item and report another
Ollama's speed under this one's name. Each row names the endpoint its workers served.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

from rich.console import Console

from batchq import clock
from batchq.backends.base import FIRST_TOKEN_FIELD
from batchq.errors import BatchqError, ConfigError
from batchq.inputs.native import InputFormat, iter_items
from batchq.local.runner import start_workers, watch_progress
from batchq.options import SubmitOptions
from batchq.records import Endpoint, Item, ItemResult, ItemStatus
from batchq.results.export import iter_results
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.keys import Keys
from batchq.store.namespace import bench_prefix, drop_namespace, served_endpoints
from batchq.terminal import printable

__all__ = [
    "ModelReport",
    "RunFigures",
    "bench_host",
    "bench_items",
    "bench_json",
    "bench_prompts",
    "parse_models",
    "percentile",
    "render_table",
    "run_bench",
    "summarize",
]

_NS = 1e9


def parse_models(text: str) -> list[str]:
    """``--models a,b``: at least one name, none twice."""
    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise ConfigError("--models: give at least one model, e.g. --models qwen3:8b,gemma3:4b")
    if dup := sorted({m for m in models if models.count(m) > 1}):
        raise ConfigError(f"--models: {', '.join(dup)} given more than once")
    return models


def bench_prompts(
    texts: Sequence[str],
    stream: BinaryIO | None = None,
    *,
    fmt: InputFormat = "jsonl",
    max_line_bytes: int = 1 << 20,
) -> list[Item]:
    """The prompts of ``--prompt`` followed by those of ``--prompt-file`` (any input line
    ``batchq submit`` accepts; the model a line names is replaced by each benchmarked one)."""
    prompts: list[Item] = []
    for n, text in enumerate(texts, 1):
        if not text.strip():
            raise ConfigError(f"--prompt number {n} is empty")
        prompts.append(Item(str(n - 1), Endpoint.GENERATE, {"model": "", "prompt": text}))
    if stream is not None:
        # Any placeholder model will do: every benchmarked model replaces it.
        prompts.extend(
            iter_items(stream, fmt=fmt, default_model="-", max_line_bytes=max_line_bytes)
        )
    if not prompts:
        raise ConfigError("give a prompt: --prompt TEXT or --prompt-file FILE")
    return prompts


def bench_items(prompts: Sequence[Item], model: str, runs: int) -> Iterator[Item]:
    """Run after run, every prompt once, all for ``model``; index = (run - 1) x prompts + prompt."""
    for run in range(1, runs + 1):
        for n, p in enumerate(prompts):
            yield Item(f"run{run}-prompt{n}", p.endpoint, {**p.body, "model": model})


@dataclass(frozen=True, slots=True)
class RunFigures:
    """One run of one model: its requests' figures, in tokens/s and seconds."""

    run: int
    succeeded: int
    failed: int
    eval_tokens_per_s: float | None
    prompt_tokens_per_s: float | None
    ttft_s: float | None
    load_s: float | None


@dataclass(frozen=True, slots=True)
class ModelReport:
    """One model's row: run figures averaged over runs, latencies pooled over all requests."""

    model: str
    batch_id: str
    requests: int
    succeeded: int
    failed: int
    eval_tokens_per_s: float | None
    prompt_tokens_per_s: float | None
    ttft_s: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    # The longest load: the cold load when the model was not resident yet. Ollama counts
    # waiting for a free slot as loading too, so concurrency above its slots inflates it.
    load_max_s: float | None
    load_mean_s: float | None
    eval_tokens_mean: float | None
    # The Ollama that served every request of the row (checked against what its workers say).
    ollama_host: str = ""
    ollama_version: str = ""
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[RunFigures] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (NumPy's default), ``q`` in [0, 1]."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _rate(metrics: Sequence[dict[str, Any]], count: str, duration: str) -> float | None:
    # Ollama omits a zero duration (a fully cached prompt): such a request says nothing of speed.
    pairs = [(m[count], m[duration]) for m in metrics if m.get(count) and m.get(duration)]
    ns = sum(d for _, d in pairs)
    return sum(c for c, _ in pairs) / (ns / _NS) if ns else None


def _seconds(metrics: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [m[key] / _NS for m in metrics if isinstance(m.get(key), int | float)]


def summarize(
    model: str, batch_id: str, results: Iterable[ItemResult], prompts_per_run: int
) -> ModelReport:
    """One model's figures from its batch's results (indices as laid out by :func:`bench_items`)."""
    by_run: dict[int, list[ItemResult]] = {}
    for r in results:
        by_run.setdefault(r.index // prompts_per_run + 1, []).append(r)
    runs: list[RunFigures] = []
    ok_metrics: list[dict[str, Any]] = []
    errors: dict[str, dict[str, Any]] = {}
    for run, rs in sorted(by_run.items()):
        ms = [r.metrics or {} for r in rs if r.status is ItemStatus.SUCCEEDED]
        ok_metrics.extend(ms)
        for r in rs:
            if r.status is not ItemStatus.SUCCEEDED:
                kind = r.error.type if r.error else r.status.value
                entry = errors.setdefault(kind, {"count": 0, "message": None})
                entry["count"] += 1
                entry["message"] = entry["message"] or (r.error.message if r.error else None)
        runs.append(
            RunFigures(
                run=run,
                succeeded=len(ms),
                failed=len(rs) - len(ms),
                eval_tokens_per_s=_rate(ms, "eval_count", "eval_duration"),
                prompt_tokens_per_s=_rate(ms, "prompt_eval_count", "prompt_eval_duration"),
                ttft_s=_mean(_seconds(ms, FIRST_TOKEN_FIELD)),
                load_s=_mean(_seconds(ms, "load_duration")),
            )
        )
    latencies = _seconds(ok_metrics, "total_duration")
    loads = _seconds(ok_metrics, "load_duration")
    requests = sum(len(rs) for rs in by_run.values())
    return ModelReport(
        model=model,
        batch_id=batch_id,
        requests=requests,
        succeeded=len(ok_metrics),
        failed=requests - len(ok_metrics),
        eval_tokens_per_s=_mean(r.eval_tokens_per_s for r in runs),
        prompt_tokens_per_s=_mean(r.prompt_tokens_per_s for r in runs),
        ttft_s=_mean(r.ttft_s for r in runs),
        latency_p50_s=percentile(latencies, 0.50),
        latency_p95_s=percentile(latencies, 0.95),
        load_max_s=max(loads) if loads else None,
        load_mean_s=_mean(loads),
        eval_tokens_mean=_mean(m.get("eval_count") for m in ok_metrics),
        errors=errors,
        runs=runs,
    )


_COLUMNS = (
    ("model", "<"),
    ("ok", ">"),
    ("failed", ">"),
    ("eval tok/s", ">"),
    ("prompt tok/s", ">"),
    ("TTFT ms", ">"),
    ("p50 s", ">"),
    ("p95 s", ">"),
    ("load s", ">"),
)


def _fmt(value: float | None, digits: int, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def render_table(reports: Sequence[ModelReport]) -> str:
    """The comparison as aligned plain text: the Ollama that served the rows, one row per
    model, then what failed and why."""
    # One line per endpoint: bench serves one, but a row must never sit under another's name.
    served = dict.fromkeys((r.ollama_version, r.ollama_host) for r in reports if r.ollama_host)
    lines = [printable(f"Ollama {version or '?'} at {host}") for version, host in served]
    rows = [[name for name, _ in _COLUMNS]]
    for r in reports:
        rows.append(
            [
                r.model,
                f"{r.succeeded}/{r.requests}",
                str(r.failed),
                _fmt(r.eval_tokens_per_s, 1),
                _fmt(r.prompt_tokens_per_s, 1),
                _fmt(r.ttft_s, 0, 1000),
                _fmt(r.latency_p50_s, 2),
                _fmt(r.latency_p95_s, 2),
                _fmt(r.load_max_s, 2),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines += [
        "  ".join(
            f"{cell:{align}{w}}" for cell, (_, align), w in zip(row, _COLUMNS, widths, strict=True)
        )
        for row in rows
    ]
    for r in reports:
        for kind, e in r.errors.items():
            # Ollama's error text: no raw escapes on the terminal.
            detail = printable(f"{kind}: {e['message'] or '-'}")
            lines.append(f"{r.model}: {e['count']} failed with {detail}")
    return "\n".join(line.rstrip() for line in lines)


def bench_json(
    reports: Sequence[ModelReport],
    settings: Settings,
    *,
    version: str,
    runs: int,
    prompts: int,
    workers: int,
) -> dict[str, Any]:
    """What ``batchq bench --json`` prints."""
    return {
        "ollama_version": version,
        "ollama_host": settings.ollama_host,
        "runs": runs,
        "prompts": prompts,
        "workers": workers,
        "concurrency": settings.concurrency,
        "ollama_queue": settings.ollama_queue_size,
        "stream": settings.stream,
        "models": [r.to_json() for r in reports],
    }


def bench_host(settings: Settings) -> str:
    """The one Ollama that bench measures: a row's figures must come from a single endpoint."""
    if len(hosts := settings.ollama_hosts) != 1:
        raise ConfigError(
            f"bench measures one Ollama at a time, not {len(hosts)} ({', '.join(hosts)}): "
            "run it once per host"
        )
    return hosts[0]


async def run_bench(
    store: BatchStore,
    models: Sequence[str],
    prompts: Sequence[Item],
    runs: int,
    *,
    settings: Settings,
    redis_url: str,
    workers: int,
    console: Console,
    show_progress: bool,
    version: str = "",
) -> list[ModelReport]:
    """Start ``workers`` worker processes with ``settings`` on ``redis_url``, in a namespace of
    their own, then submit and wait for one batch per model, in turn, and summarize each.
    ``store`` lends its connection; the namespace and its batches are gone on return."""
    endpoint = bench_host(settings)
    console.print(
        f"bench: {len(models)} model(s) x {len(prompts)} prompt(s) x {runs} run(s) on "
        f"{settings.ollama_host}, {workers} worker(s) x {settings.concurrency}"
    )
    own = BatchStore(store.redis, Keys(bench_prefix(settings.prefix)))
    own_settings = settings.with_overrides(prefix=own.keys.prefix)
    reports = []
    log_dir = settings.home / "logs" / f"bench-{clock.now_ms()}"
    try:
        with start_workers(own_settings, redis_url, workers, log_dir) as procs:
            for model in models:
                report = await _bench_model(
                    own, model, prompts, runs, console, show_progress, procs, endpoint
                )
                reports.append(dataclasses.replace(report, ollama_version=version))
    finally:
        # The workers have stopped: nothing writes to the namespace any more.
        await drop_namespace(own.redis, own.keys)
    return reports


async def _bench_model(
    store: BatchStore,
    model: str,
    prompts: Sequence[Item],
    runs: int,
    console: Console,
    show_progress: bool,
    procs: list[subprocess.Popen[bytes]],
    endpoint: str,
) -> ModelReport:
    batch_id, total = await store.submit(
        bench_items(prompts, model, runs), SubmitOptions(name=f"bench {model}")
    )
    console.print(f"{model}: batch {batch_id}, {total} requests ({runs} run(s))")
    # Polled more often than `batchq run` does: a benchmark's batches are short. Interrupted,
    # the workers stop and the namespace goes (run_bench): no load is left behind.
    await watch_progress(
        store, batch_id, console=console, show=show_progress, workers=procs, interval=0.2
    )
    served = await served_endpoints(store.redis, store.keys, {p.pid for p in procs})
    if served != [endpoint]:
        raise BatchqError(
            f"bench's workers serve {', '.join(served) or 'nothing'}, not {endpoint}: "
            "their figures would not be that Ollama's"
        )
    results = [r async for r in iter_results(store, batch_id)]
    report = summarize(model, batch_id, results, len(prompts))
    return dataclasses.replace(report, ollama_host=endpoint)
