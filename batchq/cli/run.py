"""The CLI commands that put work through the queue: ``submit``, ``worker``, ``results``, and
``run`` (all three in one), plus ``bench`` and the ``sim`` Ollama simulator.

Registered by :func:`register`; they share :mod:`batchq.cli.common`'s options, output conventions
(human text, or ``--json``) and error handling.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from batchq import clock
from batchq.cli.common import (
    Command,
    emit,
    input_args,
    open_store,
    output_args,
    settings_from,
    worker_args,
)
from batchq.client import BatchClient
from batchq.errors import BackendError, ConfigError, InputError
from batchq.inputs.native import detect_format
from batchq.inputs.sources import open_input, submit_source
from batchq.options import SubmitOptions, parse_meta_pairs
from batchq.redact import redact_url
from batchq.settings import Settings
from batchq.sim.config import SimConfig
from batchq.store.batches import BatchStore
from batchq.store.connection import resolve_redis_url
from batchq.terminal import EscapingFormatter, printable

__all__ = [
    "cmd_bench",
    "cmd_results",
    "cmd_run",
    "cmd_sim",
    "cmd_submit",
    "cmd_worker",
    "register",
]


# The flag of each SubmitOptions field whose flag is not --<field>.
_OPTION_FLAGS = {"metadata": "--meta"}


async def _submit(args: argparse.Namespace, settings: Settings, store: BatchStore) -> Any:
    # Checked before the file is read: a typo in an option must not cost a long upload.
    try:
        options = SubmitOptions(
            name=args.name,
            metadata=parse_meta_pairs(args.meta or ()),
            deadline=args.deadline,
            notify=args.notify,
            priority=args.priority,
            weight=args.weight,
        )
        options.check_target(allow_private=settings.notify_allow_private)
    except InputError as e:
        # On the command line a bad option is a bad flag: named as typed, a usage error.
        field = e.field or "?"
        raise ConfigError(f"{_OPTION_FLAGS.get(field, '--' + field)}: {e.reason}") from None
    return await submit_source(
        store,
        args.file,  # "-": standard input
        settings=settings,
        model=args.model,
        fmt=args.format,
        options=options,
    )


async def cmd_submit(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    async with open_store(settings) as (store, _):
        batch_id, total = await _submit(args, settings, store)
    emit(args, {"batch_id": batch_id, "total": total}, lambda: print(batch_id))
    return 0


async def cmd_results(args: argparse.Namespace) -> int:
    from batchq.store.presence import notice_without_workers

    async with BatchClient(settings_from(args)) as client:
        if args.wait:
            store = await client.connect()
            # Around the wait only: writing a long batch out needs no worker.
            async with notice_without_workers(store.redis, store.keys):
                await client.wait(args.batch_id)
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


async def _ollama_version(settings: Settings) -> str:
    """Ollama's version, or a ConfigError that says how to get one to answer."""
    from batchq.local.runner import check_ollama

    try:
        return await check_ollama(settings)
    except BackendError as e:
        raise ConfigError(
            f"{e}. Start Ollama, point OLLAMA_HOST (or --ollama) at it, or try batchq "
            "against the simulator: `batchq sim` in another terminal (simulated answers)."
        ) from None


async def cmd_run(args: argparse.Namespace) -> int:
    from batchq.local.runner import elapsed_text, start_workers, watch_progress
    from batchq.results.export import write_output

    settings = settings_from(args)
    version = await _ollama_version(settings)
    console = Console(stderr=True)
    async with open_store(settings) as (store, url):
        batch_id, total = await _submit(args, settings, store)
        # Ollama's version is the server's text: neither rich markup nor raw escapes.
        shown = escape(printable(version))
        console.print(
            f"batch {batch_id}: {total} items → Ollama {shown} at {settings.ollama_host}, "
            f"{args.workers} worker(s) x {settings.concurrency}",
            soft_wrap=True,  # one line in a log, however long its paths
        )
        log_dir = settings.home / "logs" / batch_id
        started = clock.monotonic()
        with start_workers(settings, url, args.workers, log_dir) as procs:
            status = await watch_progress(
                store, batch_id, console=console, show=not args.json, workers=procs
            )
            # From the submitted batch to its last item, the workers' start included.
            elapsed = clock.monotonic() - started
        ok, failed = await write_output(
            store, batch_id, args.output, fmt=args.output_format, errors=args.errors
        )
    pace = status.done / elapsed if elapsed > 0 else 0.0
    if not args.json:
        where = f"{ok + failed} results in {args.output}"
        if args.errors is not None:
            where = f"{ok} results in {args.output}, {failed} in {args.errors}"
        console.print(
            f"{status.succeeded} succeeded, {status.failed} failed in {elapsed_text(elapsed)} "
            f"({pace:,.1f} items/s); {where}",
            highlight=False,
            soft_wrap=True,
        )
    else:
        summary = {"elapsed_s": round(elapsed, 3), "items_per_s": round(pace, 3)}
        print(json.dumps({**status.model_dump(mode="json"), **summary}))
    return 1 if args.strict and status.failed else 0


async def cmd_bench(args: argparse.Namespace) -> int:
    from batchq.local.bench import (
        bench_host,
        bench_json,
        bench_prompts,
        parse_models,
        render_table,
        run_bench,
    )

    settings = settings_from(args)
    models = parse_models(args.models)
    bench_host(settings)
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
    async with open_store(settings) as (store, url):
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
            version=version,
        )
    data = bench_json(
        reports,
        settings,
        version=version,
        runs=args.runs,
        prompts=len(prompts),
        workers=args.workers,
    )
    emit(args, data, lambda: print(render_table(reports)))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.settings import worker_kwargs
    from workers.worker import BatchqWorker

    settings = settings_from(args)
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    # arq logs two lines per job; the worker logs a progress summary instead (-v: both).
    logging.getLogger("arq.worker").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    url = resolve_redis_url(settings)
    logging.getLogger("batchq.worker").info(
        "worker: redis %s, ollama %s, concurrency %s, ollama queue %d",
        redact_url(url),
        settings.ollama_host,
        settings.concurrency,
        settings.ollama_queue_size,
    )
    worker = BatchqWorker(**worker_kwargs(settings, url), batchq_burst=args.burst)
    worker.run()
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from batchq.sim.process import SimConfig, serve

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


def register(cmd: Command) -> None:
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
    sp.add_argument(
        "--metrics-host",
        help="address the metrics port listens on (BATCHQ_METRICS_HOST; default 127.0.0.1, "
        "0.0.0.0 for all interfaces)",
    )
    sp.add_argument("-v", "--verbose", action="store_true")
    sp.set_defaults(handler=cmd_worker, sync=True)

    sp = cmd("results", "write a batch's results in input order, as JSONL", json_out=False)
    sp.add_argument("batch_id")
    sp.add_argument("-o", "--output", default="-", help="file to write (default stdout)")
    sp.add_argument("--wait", action="store_true", help="wait until every item is final")
    output_args(sp, "--format")
    sp.set_defaults(handler=cmd_results)

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
    # One request at a time by default, none waiting in Ollama's queue: the figures are then
    # each model's own speed and latency.
    sp.set_defaults(concurrency=1, ollama_queue=0)
    sp.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    sp.set_defaults(handler=cmd_bench)

    sp = cmd(
        "sim",
        "run the Ollama simulator (simulated answers, for trying batchq)",
        redis=False,
        json_out=False,
    )
    sp.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=11434, help="default 11434, as Ollama")
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


def _default_text(f: dataclasses.Field[Any]) -> str:
    if isinstance(f.default, tuple):
        parts = [p if isinstance(p, str) else f"{p[0]}={p[1]:g}" for p in f.default]
        return ",".join(parts) or "none"
    return str(f.default)
