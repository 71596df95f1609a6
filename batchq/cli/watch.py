"""The CLI commands that look at the queue: ``status``, ``list``, ``top``, and the ``metrics``
and ``serve`` web servers.

Registered by :func:`batchq.cli.main.main`'s parser; they share its options, output conventions
(human text, or ``--json``) and error handling.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from batchq import clock
from batchq.cli.main import _human_status, _print, _settings, _store
from batchq.errors import ConfigError

__all__ = ["cmd_list", "cmd_metrics", "cmd_serve", "cmd_status", "cmd_top"]


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
    from batchq.monitor.watch import watch

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
    from batchq.monitor.top import render, snapshot, top

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
    from batchq.monitor.metrics import app
    from batchq.monitor.web import run_server

    async with _store(_settings(args)) as (store, _):
        application = app(store.redis, store.keys, recent=args.batches)
        await run_server(application, args.host, args.port, "Prometheus metrics")
    return 0


async def cmd_serve(args: argparse.Namespace) -> int:
    from batchq.monitor.web import app, run_server

    async with _store(_settings(args)) as (store, _):
        await run_server(app(store, limit=args.limit), args.host, args.port, "batchq status page")
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    from batchq.monitor.tables import batch_rows, batches_table

    settings = _settings(args)
    async with _store(settings) as (store, _):
        batches = await store.recent(limit=args.limit)
        # An embedded server with nothing stored: a first run, or a BATCHQ_HOME other than
        # the one the batches went to.
        new = not batches and not settings.redis_url and not await store.redis.dbsize()
    rows = batch_rows(batches, clock.now_ms())

    def human() -> None:
        if new:
            home = settings.home.expanduser().resolve()
            print(f"no batches yet: BATCHQ_HOME={home} is new; submit one with `batchq submit`")
        elif not rows:
            print("no batches")
        else:
            _console().print(batches_table(rows))

    _print(args, rows, human)
    return 0


def _console() -> Console:
    console = Console()
    # Piped output keeps whole lines rather than rich's 80-column default.
    return console if console.is_terminal else Console(width=max(console.width, 160))
