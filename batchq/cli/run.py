"""The CLI commands that put work through the queue: ``submit``, ``worker``, ``results``, and
``run`` (all three in one), plus ``bench`` and the ``sim`` Ollama simulator.

Registered by :func:`batchq.cli.main.main`'s parser; they share its options, output conventions
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

from batchq import clock
from batchq.cli.main import _print, _settings, _store
from batchq.client import BatchClient
from batchq.errors import BackendError, ConfigError
from batchq.inputs.native import detect_format
from batchq.inputs.sources import open_input, submit_source
from batchq.options import check_notify_url, parse_deadline, parse_meta_pairs
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.connection import redact, resolve_redis_url
from batchq.store.stride import check_priority, check_weight

__all__ = ["cmd_bench", "cmd_results", "cmd_run", "cmd_sim", "cmd_submit", "cmd_worker"]


async def _submit(args: argparse.Namespace, settings: Settings, store: BatchStore) -> Any:
    # Checked before the file is read: a typo in an option must not cost a long upload.
    metadata = parse_meta_pairs(args.meta or ())
    deadline = parse_deadline(args.deadline, now_ms=clock.now_ms()) if args.deadline else None
    notify = check_notify_url(args.notify) if args.notify else None
    return await submit_source(
        store,
        args.file,  # "-": standard input
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


async def cmd_results(args: argparse.Namespace) -> int:
    from batchq.store.presence import notice_without_workers

    async with BatchClient(_settings(args)) as client:
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

    settings = _settings(args)
    version = await _ollama_version(settings)
    console = Console(stderr=True)
    async with _store(settings) as (store, url):
        batch_id, total = await _submit(args, settings, store)
        console.print(
            f"batch {batch_id}: {total} items → Ollama {version} at {settings.ollama_host}, "
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

    settings = _settings(args)
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
        "worker: redis %s, ollama %s, concurrency %d, ollama queue %d",
        redact(url),
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
