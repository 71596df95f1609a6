"""The ``batchq`` command line. Every option falls back to a ``BATCHQ_*`` variable (see
:class:`batchq.settings.Settings`); every reporting command takes ``--json``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any

from rich.console import Console

from . import clock
from .batches import BatchStore
from .client import BatchClient
from .connection import redact, redis_errors, resolve_redis_url
from .errors import BatchqError, ConfigError, OllamaError
from .inputs import detect_format
from .models import BatchStatus
from .options import check_notify_url, parse_deadline, parse_meta_pairs
from .settings import Settings, build_settings
from .sources import open_input, submit_source
from .stride import DEFAULT_PRIORITY, DEFAULT_WEIGHT, check_priority, check_weight

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name, None)
        for name in (
            "redis_url",
            "ollama_host",
            "prefix",
            "concurrency",
            "rate",
            "timeout",
            "max_attempts",
            "retry_delay",
            "global_rate",
            "global_concurrency",
            "global_tpm",
            "metrics_port",
            "metrics_host",
        )
    }
    return build_settings(**overrides)


@contextlib.asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[tuple[BatchStore, str]]:
    async with BatchClient(settings) as client:
        url = client.redis_url or ""
        with redis_errors(url):
            yield client.store, url


def _print(args: argparse.Namespace, data: Any, human: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
    else:
        human()


def _meta_text(s: BatchStatus) -> str:
    return " ".join(f"{k}={v}" for k, v in s.metadata.items())


def _human_status(s: BatchStatus) -> None:
    print(f"batch     {s.batch_id}" + (f"  ({s.name})" if s.name else ""))
    print(f"state     {s.state.value}")
    if s.metadata:
        print(f"meta      {_meta_text(s)}")
    expired = f", {s.expired} expired" if s.deadline or s.expired else ""
    print(
        f"items     {s.total} total: {s.queued} queued, {s.running} running, "
        f"{s.succeeded} succeeded, {s.failed} failed, {s.cancelled} cancelled{expired}"
    )
    print(f"dispatch  priority {s.priority}, weight {s.weight:g}")
    if s.notify:
        print(f"notify    {s.notify}")
    for label, value in (
        ("deadline", s.deadline),
        ("created", s.created_at),
        ("started", s.started_at),
        ("finished", s.finished_at),
    ):
        if value:
            print(f"{label:<9} {value}")


async def _submit(args: argparse.Namespace, settings: Settings, store: BatchStore) -> Any:
    # Checked before the file is read: a typo in an option must not cost a long upload.
    metadata = parse_meta_pairs(args.meta or ())
    deadline = parse_deadline(args.deadline, now_ms=clock.now_ms()) if args.deadline else None
    notify = check_notify_url(args.notify) if args.notify else None
    source = sys.stdin.buffer if args.file == "-" else args.file
    return await submit_source(
        store,
        source,
        settings=settings,
        model=args.model,
        name=args.name,
        fmt=args.format,
        metadata=metadata,
        deadline_ms=deadline,
        notify=notify,
        priority=check_priority(args.priority),
        weight=check_weight(args.weight),
    )


async def cmd_submit(args: argparse.Namespace) -> int:
    settings = _settings(args)
    async with _store(settings) as (store, _):
        batch_id, total = await _submit(args, settings, store)
    _print(args, {"batch_id": batch_id, "total": total}, lambda: print(batch_id))
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    if not args.batch_id:
        if args.watch:
            raise ConfigError("--watch needs a batch id")
        return await cmd_list(args)
    if args.watch:
        return await _watch(args)
    async with _store(_settings(args)) as (store, _):
        s = await store.status(args.batch_id)
    _print(args, s.model_dump(mode="json"), lambda: _human_status(s))
    return 0


async def _watch(args: argparse.Namespace) -> int:
    from .watch import watch

    console = Console()
    mode = "json" if args.json else "live" if console.is_terminal else "plain"
    if args.interval is not None and args.interval <= 0:
        raise ConfigError("--interval must be a positive number of seconds")
    interval = args.interval or (1.0 if mode == "live" else 10.0)
    async with _store(_settings(args)) as (store, _):
        await store.meta(args.batch_id)  # unknown id: one clear error before watching
        await watch(store, args.batch_id, console=console, mode=mode, interval=interval)
    return 0


async def cmd_top(args: argparse.Namespace) -> int:
    from .top import render, snapshot, top

    if args.interval <= 0:
        raise ConfigError("--interval must be a positive number of seconds")
    console = Console()
    async with _store(_settings(args)) as (store, _):
        if args.json or args.once or not console.is_terminal:
            snap = await snapshot(store)
            _print(args, snap.to_json(), lambda: _console().print(render(snap, None)))
        else:
            await top(store, console=console, interval=args.interval)
    return 0


async def cmd_metrics(args: argparse.Namespace) -> int:
    from .metrics import app
    from .web import run_server

    async with _store(_settings(args)) as (store, _):
        application = app(store.redis, store.keys, recent=args.batches)
        await run_server(application, args.host, args.port, "Prometheus metrics")
    return 0


async def cmd_serve(args: argparse.Namespace) -> int:
    from .web import app, run_server

    async with _store(_settings(args)) as (store, _):
        await run_server(app(store, limit=args.limit), args.host, args.port, "batchq status page")
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    from .tables import batch_rows, batches_table

    async with _store(_settings(args)) as (store, _):
        batches = await store.recent(limit=args.limit)
    rows = batch_rows(batches, clock.now_ms())

    def human() -> None:
        if not rows:
            print("no batches")
        else:
            _console().print(batches_table(rows))

    _print(args, rows, human)
    return 0


def _console() -> Console:
    console = Console()
    # Piped output keeps whole lines rather than rich's 80-column default.
    return console if console.is_terminal else Console(width=max(console.width, 160))


async def cmd_results(args: argparse.Namespace) -> int:
    async with BatchClient(_settings(args)) as client:
        ok, failed = await client.export_results(
            args.batch_id,
            args.output,
            wait=args.wait,
            fmt=args.output_format,
            errors=args.errors,
        )
    _report_written(args, ok, failed)
    return 0


def _report_written(args: argparse.Namespace, ok: int, failed: int) -> None:
    if args.errors is not None:
        where = "stdout" if args.output == "-" else args.output
        print(
            f"wrote {ok} results to {where} and {failed} failed or cancelled to {args.errors}",
            file=sys.stderr,
        )
    elif args.output != "-":
        print(f"wrote {ok + failed} results to {args.output}", file=sys.stderr)


def _control(op: Callable[[BatchStore, str], Awaitable[BatchStatus]]) -> Any:
    """A command that changes a batch and prints its status afterwards."""

    async def command(args: argparse.Namespace) -> int:
        async with _store(_settings(args)) as (store, _):
            s = await op(store, args.batch_id)
        _print(args, s.model_dump(mode="json"), lambda: _human_status(s))
        return 0

    return command


cmd_cancel = _control(BatchStore.cancel)
cmd_pause = _control(BatchStore.pause)
cmd_resume = _control(BatchStore.resume)


async def cmd_repair(args: argparse.Namespace) -> int:
    async with _store(_settings(args)) as (store, _):
        n = await store.repair(args.batch_id)
    _print(
        args,
        {"batch_id": args.batch_id, "requeued": n},
        lambda: print(f"{n} lost item(s) of {args.batch_id} queued again"),
    )
    return 0


async def cmd_limits(args: argparse.Namespace) -> int:
    from .admission import Admission

    settings = _settings(args)
    async with _store(settings) as (store, _):
        adm = Admission(store.redis, store.keys, settings.ollama_hosts[0])
        rate, conc, tpm = args.limit_rate, args.limit_concurrency, args.limit_tpm
        if args.clear or rate is not None or conc is not None or tpm is not None:
            await adm.configure(
                rate=rate, concurrency=conc, tokens_per_minute=tpm, clear=args.clear
            )
        lim = await adm.limits()
    data = {
        "endpoint": lim.endpoint,
        "rate": lim.rate,
        "concurrency": lim.concurrency,
        "tokens_per_minute": lim.tokens_per_minute,
        "in_flight": lim.in_flight,
    }

    def human() -> None:
        rate = f"{lim.rate:g}/s" if lim.rate else "none"
        conc = str(lim.concurrency) if lim.concurrency else "none"
        tpm = f"{lim.tokens_per_minute}/min" if lim.tokens_per_minute else "none"
        print(
            f"{lim.endpoint}: rate {rate}, concurrency {conc}, tokens {tpm},"
            f" in flight {lim.in_flight}"
        )

    _print(args, data, human)
    return 0


async def _ollama_version(settings: Settings) -> str:
    """Ollama's version, or a ConfigError that says how to get one to answer."""
    from .runner import check_ollama

    try:
        return await check_ollama(settings)
    except OllamaError as e:
        raise ConfigError(
            f"{e}. Start Ollama, point OLLAMA_HOST (or --ollama) at it, or try batchq "
            "against the simulator: `batchq sim` in another terminal (simulated answers)."
        ) from None


async def cmd_run(args: argparse.Namespace) -> int:
    from .runner import start_workers, watch_progress, write_output

    settings = _settings(args)
    version = await _ollama_version(settings)
    console = Console(stderr=True)
    async with _store(settings) as (store, url):
        batch_id, total = await _submit(args, settings, store)
        console.print(
            f"batch {batch_id}: {total} items → Ollama {version} at {settings.ollama_host}, "
            f"{args.workers} worker(s) x {settings.concurrency}"
        )
        log_dir = settings.home / "logs" / batch_id
        with start_workers(settings, url, args.workers, log_dir) as procs:
            status = await watch_progress(
                store, batch_id, console=console, show=not args.json, workers=procs
            )
        ok, failed = await write_output(
            store, batch_id, args.output, fmt=args.output_format, errors=args.errors
        )
    if not args.json:
        where = f"{ok + failed} results in {args.output}"
        if args.errors is not None:
            where = f"{ok} results in {args.output}, {failed} in {args.errors}"
        console.print(f"{status.succeeded} succeeded, {status.failed} failed; {where}")
    else:
        print(json.dumps(status.model_dump(mode="json")))
    return 1 if args.strict and status.failed else 0


async def cmd_bench(args: argparse.Namespace) -> int:
    from .modelbench import bench_json, bench_prompts, parse_models, render_table, run_bench

    settings = _settings(args)
    models = parse_models(args.models)
    if args.runs < 1 or args.workers < 1:
        raise ConfigError("--runs and --workers must be at least 1")
    with contextlib.ExitStack() as files:
        stream = files.enter_context(open_input(args.prompt_file)) if args.prompt_file else None
        prompts = bench_prompts(
            args.prompt or [],
            stream,
            fmt=detect_format(args.prompt_file or ""),
            max_line_bytes=settings.max_line_bytes,
        )
    version = await _ollama_version(settings)
    async with _store(settings) as (store, url):
        reports = await run_bench(
            store,
            models,
            prompts,
            args.runs,
            settings=settings,
            redis_url=url,
            workers=args.workers,
            console=Console(stderr=True),
            show_progress=not args.json,
        )
    data = bench_json(
        reports,
        settings,
        version=version,
        runs=args.runs,
        prompts=len(prompts),
        workers=args.workers,
    )
    _print(args, data, lambda: print(render_table(reports)))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.settings import BatchqWorker, worker_kwargs

    settings = _settings(args)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # arq logs two lines per job; the worker logs a progress summary instead (-v: both).
    logging.getLogger("arq.worker").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    url = resolve_redis_url(settings)
    logging.getLogger("batchq.worker").info(
        "worker: redis %s, ollama %s, concurrency %d",
        redact(url),
        settings.ollama_host,
        settings.concurrency,
    )
    worker = BatchqWorker(**worker_kwargs(settings, url), batchq_burst=args.burst)
    worker.run()
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from .sim import SimConfig, serve

    values: dict[str, Any] = {}
    for f in dataclasses.fields(SimConfig):
        v = getattr(args, f"sim_{f.name}")
        if v is None:
            continue
        parse = f.metadata.get("parse")
        try:
            values[f.name] = parse(v) if parse else v
        except ValueError as e:
            raise ConfigError(f"--{f.name.replace('_', '-')}: {e}") from None
    serve(SimConfig(**values), args.host, args.port)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="batchq", description="A persistent batch-inference queue for Ollama."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help: str, *, redis: bool = True, json_out: bool = True) -> Any:
        sp = sub.add_parser(name, help=help, description=help)
        if redis:
            sp.add_argument(
                "--redis", dest="redis_url", metavar="URL", help="Redis URL (BATCHQ_REDIS_URL)"
            )
            sp.add_argument("--prefix", help="key namespace (BATCHQ_PREFIX, default batchq)")
        if json_out:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    def input_args(sp: Any) -> None:
        sp.add_argument("file", help="JSONL or .txt file of prompts; - for stdin")
        sp.add_argument("--model", help="model for lines that name none")
        sp.add_argument("--name", help="a label for the batch")
        sp.add_argument("--format", choices=["jsonl", "txt"], help="override the file extension")
        sp.add_argument(
            "--notify",
            metavar="URL",
            help="when the batch is final, one worker POSTs its status JSON here (retried on "
            "failure, never delivered twice)",
        )
        sp.add_argument(
            "--deadline",
            metavar="WHEN",
            help="items not started by then expire: a duration (90m, 1h30m, 2d) or an ISO 8601 "
            "time (local unless it names its zone); running items finish",
        )
        sp.add_argument(
            "--priority",
            type=int,
            default=DEFAULT_PRIORITY,
            help="dispatch order between batches: a higher priority gets every item to dispatch "
            f"before a lower one gets any (integer, default {DEFAULT_PRIORITY})",
        )
        sp.add_argument(
            "--weight",
            type=float,
            default=DEFAULT_WEIGHT,
            help="share of the dispatch among batches of the same priority, proportional to the "
            f"weight (positive, default {DEFAULT_WEIGHT:g})",
        )
        sp.add_argument(
            "--meta",
            action="append",
            metavar="KEY=VALUE",
            help="metadata stored with the batch, shown by status and list (repeatable, at most "
            "16; keys up to 64 characters, values up to 512)",
        )

    def worker_args(sp: Any) -> None:
        sp.add_argument("--ollama", dest="ollama_host", metavar="URL", help="(OLLAMA_HOST)")
        sp.add_argument("--concurrency", type=int, help="requests in flight per worker")
        sp.add_argument("--rate", type=float, help="most requests started per second")
        sp.add_argument("--timeout", type=float, help="seconds per request (default 600)")
        sp.add_argument("--max-attempts", type=int, help="attempts per item (default 5)")
        sp.add_argument("--retry-delay", type=float, help="backoff base in seconds (default 1)")
        sp.add_argument(
            "--global-rate",
            type=float,
            help="most requests per second to this Ollama from all workers together (0: none)",
        )
        sp.add_argument(
            "--global-concurrency",
            type=int,
            help="most requests in flight to this Ollama from all workers together (0: none)",
        )
        sp.add_argument(
            "--global-tpm",
            type=int,
            help="most tokens per minute (prompt + reply), all workers together (0: none)",
        )

    def output_args(sp: Any, format_flag: str) -> None:
        sp.add_argument(
            format_flag,
            dest="output_format",
            choices=["native", "openai"],
            default="native",
            help="batchq's result lines (default) or OpenAI Batch API output lines",
        )
        sp.add_argument(
            "--errors",
            metavar="FILE",
            help="write failed and cancelled items to FILE; the output then holds successes",
        )

    sp = cmd("submit", "validate a file and queue it as a batch; prints the batch id")
    input_args(sp)
    sp.set_defaults(handler=cmd_submit)

    sp = cmd("worker", "run a worker that sends queued items to Ollama", json_out=False)
    worker_args(sp)
    sp.add_argument("--burst", action="store_true", help="exit when no work is left")
    sp.add_argument(
        "--metrics-port",
        type=int,
        help="serve this worker's Prometheus metrics on this port (BATCHQ_METRICS_PORT)",
    )
    sp.add_argument("--metrics-host", help="address the metrics port listens on (default 0.0.0.0)")
    sp.add_argument("-v", "--verbose", action="store_true")
    sp.set_defaults(handler=cmd_worker, sync=True)

    sp = cmd("status", "a batch's progress (all recent batches without an id)")
    sp.add_argument("batch_id", nargs="?")
    sp.add_argument("--limit", type=int, default=50, help="batches listed without an id")
    sp.add_argument(
        "--watch",
        action="store_true",
        help="follow the batch until it is final: live on a terminal, else a line per refresh",
    )
    sp.add_argument(
        "--interval",
        type=float,
        help="seconds between refreshes (default 1 on a terminal, 10 otherwise)",
    )
    sp.set_defaults(handler=cmd_status)

    sp = cmd("top", "live workers: host, Ollama endpoints, items in flight, last error")
    sp.add_argument("--once", action="store_true", help="print once (always, when piped)")
    sp.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    sp.set_defaults(handler=cmd_top)

    sp = cmd("metrics", "serve queue-level Prometheus metrics read from Redis", json_out=False)
    sp.add_argument("--port", type=int, default=9464, help="default 9464")
    sp.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    sp.add_argument(
        "--batches",
        type=int,
        default=20,
        help="recent batches given per-batch series, besides the unfinished ones (default 20)",
    )
    sp.set_defaults(handler=cmd_metrics)

    sp = cmd("serve", "a web page of batches and workers, refreshed live", json_out=False)
    sp.add_argument("--port", type=int, default=8470, help="default 8470")
    sp.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    sp.add_argument("--limit", type=int, default=50, help="most recent batches shown")
    sp.set_defaults(handler=cmd_serve)

    sp = cmd("results", "write a batch's results in input order, as JSONL", json_out=False)
    sp.add_argument("batch_id")
    sp.add_argument("-o", "--output", default="-", help="file to write (default stdout)")
    sp.add_argument("--wait", action="store_true", help="wait until every item is final")
    output_args(sp, "--format")
    sp.set_defaults(handler=cmd_results)

    sp = cmd("cancel", "cancel a batch: items not yet sent are not sent")
    sp.add_argument("batch_id")
    sp.set_defaults(handler=cmd_cancel)

    sp = cmd("pause", "pause a batch: nothing more is sent; requests already sent finish")
    sp.add_argument("batch_id")
    sp.set_defaults(handler=cmd_pause)

    sp = cmd("resume", "resume a paused batch where it stopped")
    sp.add_argument("batch_id")
    sp.set_defaults(handler=cmd_resume)

    sp = cmd("repair", "find items that are neither final, queued nor running; queue them again")
    sp.add_argument("batch_id")
    sp.set_defaults(handler=cmd_repair)

    from .cli_control import add_commands

    add_commands(cmd)

    sp = cmd("limits", "show or change the global limits of an Ollama endpoint")
    sp.add_argument("--ollama", dest="ollama_host", metavar="URL", help="(OLLAMA_HOST)")
    sp.add_argument(
        "--rate", dest="limit_rate", type=float, help="requests per second, all workers (0: none)"
    )
    sp.add_argument(
        "--concurrency", dest="limit_concurrency", type=int, help="requests in flight (0: none)"
    )
    sp.add_argument(
        "--tpm", dest="limit_tpm", type=int, help="tokens per minute, all workers (0: none)"
    )
    sp.add_argument("--clear", action="store_true", help="remove all limits")
    sp.set_defaults(handler=cmd_limits)

    sp = cmd("list", "recent batches, newest first")
    sp.add_argument("--limit", type=int, default=50)
    sp.set_defaults(handler=cmd_list)

    sp = cmd("run", "submit, process with local workers, and write results, all in one")
    input_args(sp)
    worker_args(sp)
    sp.add_argument("-o", "--output", required=True, help="results file (- for stdout)")
    sp.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    sp.add_argument("--strict", action="store_true", help="exit 1 if any item failed")
    output_args(sp, "--output-format")
    sp.set_defaults(handler=cmd_run)

    sp = cmd("bench", "run the same prompts on several models through the queue; compare them")
    sp.add_argument("--models", required=True, help="comma-separated, e.g. qwen3:8b,gemma3:4b")
    sp.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    sp.add_argument(
        "--prompt-file", metavar="FILE", help="more prompts: any file `batchq submit` takes"
    )
    sp.add_argument("--runs", type=int, default=3, help="times each prompt runs (default 3)")
    worker_args(sp)
    # One request at a time by default: the figures are then each model's own speed.
    sp.set_defaults(concurrency=1)
    sp.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    sp.set_defaults(handler=cmd_bench)

    sp = cmd(
        "sim",
        "run the Ollama simulator (simulated answers, for trying batchq)",
        redis=False,
        json_out=False,
    )
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=11434)
    from .sim import SimConfig

    for f in dataclasses.fields(SimConfig):
        about = f.metadata.get("help")
        sp.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f"sim_{f.name}",
            type=str if "parse" in f.metadata else type(f.default),
            metavar=f.name.upper(),
            help=(f"{about}; " if about else "") + f"default {_default_text(f)}",
        )
    sp.set_defaults(handler=cmd_sim, sync=True)
    return p


def _default_text(f: dataclasses.Field[Any]) -> str:
    if isinstance(f.default, tuple):
        parts = [p if isinstance(p, str) else f"{p[0]}={p[1]:g}" for p in f.default]
        return ",".join(parts) or "none"
    return str(f.default)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], Any] = args.handler
    try:
        if getattr(args, "sync", False):
            return int(handler(args))
        coro: Coroutine[Any, Any, int] = handler(args)
        return asyncio.run(coro)
    except BatchqError as e:
        print(f"batchq: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    except KeyboardInterrupt:
        return 130
