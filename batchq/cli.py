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
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from rich.console import Console

from .batches import BatchStore
from .client import BatchClient
from .connection import redact, redis_errors, resolve_redis_url
from .errors import BatchqError, ConfigError, OllamaError
from .inputs import detect_format
from .models import BatchStatus
from .settings import Settings, build_settings
from .sources import open_input, submit_source

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


def _human_status(s: BatchStatus) -> None:
    print(f"batch     {s.batch_id}" + (f"  ({s.name})" if s.name else ""))
    print(f"state     {s.state.value}")
    print(
        f"items     {s.total} total: {s.queued} queued, {s.running} running, "
        f"{s.succeeded} succeeded, {s.failed} failed, {s.cancelled} cancelled"
    )
    for label, value in (
        ("created", s.created_at),
        ("started", s.started_at),
        ("finished", s.finished_at),
    ):
        if value:
            print(f"{label:<9} {value}")


async def _submit(args: argparse.Namespace, settings: Settings, store: BatchStore) -> Any:
    source = sys.stdin.buffer if args.file == "-" else args.file
    return await submit_source(
        store, source, settings=settings, model=args.model, name=args.name, fmt=args.format
    )


async def cmd_submit(args: argparse.Namespace) -> int:
    settings = _settings(args)
    async with _store(settings) as (store, _):
        batch_id, total = await _submit(args, settings, store)
    _print(args, {"batch_id": batch_id, "total": total}, lambda: print(batch_id))
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    if not args.batch_id:
        return await cmd_list(args)
    async with _store(_settings(args)) as (store, _):
        s = await store.status(args.batch_id)
    _print(args, s.model_dump(mode="json"), lambda: _human_status(s))
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    async with _store(_settings(args)) as (store, _):
        batches = await store.recent(limit=getattr(args, "limit", 50))

    def human() -> None:
        if not batches:
            print("no batches")
        for s in batches:
            done = s.succeeded + s.failed + s.cancelled
            print(
                f"{s.batch_id}  {s.state.value:<9}  {done}/{s.total} done  "
                f"{s.failed} failed  {s.created_at}  {s.name or ''}"
            )

    _print(args, [s.model_dump(mode="json") for s in batches], human)
    return 0


async def cmd_results(args: argparse.Namespace) -> int:
    async with BatchClient(_settings(args)) as client:
        n = await client.write_results(args.batch_id, args.output, wait=args.wait)
    if args.output != "-":
        print(f"wrote {n} results to {args.output}", file=sys.stderr)
    return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    async with _store(_settings(args)) as (store, _):
        s = await store.cancel(args.batch_id)
    _print(args, s.model_dump(mode="json"), lambda: _human_status(s))
    return 0


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
        n = await write_output(store, batch_id, args.output)
    if not args.json:
        console.print(
            f"{status.succeeded} succeeded, {status.failed} failed; {n} results in {args.output}"
        )
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

    sp = cmd("submit", "validate a file and queue it as a batch; prints the batch id")
    input_args(sp)
    sp.set_defaults(handler=cmd_submit)

    sp = cmd("worker", "run a worker that sends queued items to Ollama", json_out=False)
    worker_args(sp)
    sp.add_argument("--burst", action="store_true", help="exit when no work is left")
    sp.add_argument("-v", "--verbose", action="store_true")
    sp.set_defaults(handler=cmd_worker, sync=True)

    sp = cmd("status", "a batch's progress (all recent batches without an id)")
    sp.add_argument("batch_id", nargs="?")
    sp.set_defaults(handler=cmd_status)

    sp = cmd("results", "write a batch's results in input order, as JSONL", json_out=False)
    sp.add_argument("batch_id")
    sp.add_argument("-o", "--output", default="-", help="file to write (default stdout)")
    sp.add_argument("--wait", action="store_true", help="wait until every item is final")
    sp.set_defaults(handler=cmd_results)

    sp = cmd("cancel", "cancel a batch: items not yet sent are not sent")
    sp.add_argument("batch_id")
    sp.set_defaults(handler=cmd_cancel)

    sp = cmd("repair", "find items that are neither final, queued nor running; queue them again")
    sp.add_argument("batch_id")
    sp.set_defaults(handler=cmd_repair)

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
