"""The CLI commands that look at the queue: ``status``, ``list``, ``top``, and the ``metrics``
and ``serve`` web servers.

Registered by :func:`register`; they share :mod:`batchq.cli.common`'s options, output conventions
(human text, or ``--json``) and error handling.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from batchq import clock
from batchq.cli.common import Command, emit, human_status, open_store, settings_from
from batchq.errors import ConfigError
from batchq.settings import Settings

if TYPE_CHECKING:
    from batchq.monitor.hosts import HostCheck

__all__ = ["cmd_list", "cmd_metrics", "cmd_serve", "cmd_status", "cmd_top", "register"]


async def cmd_status(args: argparse.Namespace) -> int:
    if not args.batch_id:
        if args.watch:
            raise ConfigError("--watch needs a batch id")
        return await _list(args, with_hosts=True)
    if args.watch:
        return await _watch(args)
    async with open_store(settings_from(args)) as (store, _):
        s = await store.status(args.batch_id)
    emit(args, s.model_dump(mode="json"), lambda: human_status(s))
    return 0


async def _watch(args: argparse.Namespace) -> int:
    from batchq.monitor.watch import watch

    console = Console()
    mode = "json" if args.json else "live" if console.is_terminal else "plain"
    if args.interval is not None and args.interval <= 0:
        raise ConfigError("--interval must be a positive number of seconds")
    interval = args.interval or (1.0 if mode == "live" else 10.0)
    async with open_store(settings_from(args)) as (store, _):
        await store.meta(args.batch_id)  # unknown id: one clear error before watching
        await watch(store, args.batch_id, console=console, mode=mode, interval=interval)
    return 0


async def cmd_top(args: argparse.Namespace) -> int:
    from batchq.monitor.top import render, snapshot, top

    if args.interval <= 0:
        raise ConfigError("--interval must be a positive number of seconds")
    console = Console()
    async with open_store(settings_from(args)) as (store, _):
        if args.json or args.once or not console.is_terminal:
            snap = await snapshot(store)
            emit(args, snap.to_json(), lambda: _console().print(render(snap, None)))
        else:
            await top(store, console=console, interval=args.interval)
    return 0


def _host_check(args: argparse.Namespace, settings: Settings) -> HostCheck:
    from batchq.monitor.hosts import HostCheck

    return HostCheck.for_listen(args.host, [*settings.allowed_host_names, *(args.allow_host or [])])


async def cmd_metrics(args: argparse.Namespace) -> int:
    from batchq.monitor.metrics import app
    from batchq.monitor.web import run_server

    settings = settings_from(args)
    hosts = _host_check(args, settings)
    async with open_store(settings) as (store, _):
        application = app(
            store.redis, store.keys, recent=args.batches, hosts=hosts if hosts.loopback else None
        )
        await run_server(application, args.host, args.port, "Prometheus metrics")
    return 0


async def cmd_serve(args: argparse.Namespace) -> int:
    from batchq.api.app import mount
    from batchq.api.auth import check_exposure
    from batchq.monitor.web import app, run_server

    settings = settings_from(args)
    hosts = _host_check(args, settings)
    keys = [*settings.api_key_list, *(k for k in args.api_key or [] if k)]
    check_exposure(loopback=hosts.loopback, keys=keys, no_auth=args.no_auth)
    if hosts.wildcard and not hosts.allowed:
        print(
            f"answering Host headers naming localhost, {socket.gethostname()} or an address of "
            "this machine; --allow-host NAME for any other name",
            file=sys.stderr,
        )
    async with open_store(settings) as (store, _):
        application = app(store, limit=args.limit, hosts=hosts)
        mount(application, store, settings, keys=keys)
        await run_server(application, args.host, args.port, "batchq status page")
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    return await _list(args, with_hosts=False)


async def _list(args: argparse.Namespace, *, with_hosts: bool) -> int:
    """The recent batches; ``with_hosts``: and, below them (not in ``--json``, which stays a
    list of batches), the Ollama hosts in use (``batchq status``)."""
    from batchq.monitor.hosts_view import host_rows
    from batchq.monitor.tables import batch_rows, batches_table, hosts_table

    settings = settings_from(args)
    async with open_store(settings) as (store, _):
        batches = await store.recent(limit=args.limit)
        # An embedded server with nothing stored: a first run, or a BATCHQ_HOME other than
        # the one the batches went to.
        new = not batches and not settings.redis_url and not await store.redis.dbsize()
        hosts = await host_rows(store.redis, store.keys) if with_hosts and not args.json else []
    rows = batch_rows(batches, clock.now_ms())

    def human() -> None:
        if new:
            home = settings.home.expanduser().resolve()
            print(f"no batches yet: BATCHQ_HOME={home} is new; submit one with `batchq submit`")
        elif not rows:
            print("no batches")
        else:
            _console().print(batches_table(rows))
        if hosts:
            console = _console()
            console.print()
            console.print(Text("Ollama hosts", style="bold"))
            console.print(hosts_table(hosts))

    emit(args, rows, human)
    return 0


def _console() -> Console:
    console = Console()
    # Piped output keeps whole lines rather than rich's 80-column default.
    return console if console.is_terminal else Console(width=max(console.width, 160))


def register(cmd: Command) -> None:
    sp = cmd("status", "a batch's progress (without an id: recent batches and the Ollama hosts)")
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

    sp = cmd(
        "top",
        "live workers (host, Ollama endpoints, items in flight, last error) and Ollama hosts "
        "(model served, models loaded, model loads, auto limits)",
    )
    sp.add_argument("--once", action="store_true", help="print once (always, when piped)")
    sp.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    sp.set_defaults(handler=cmd_top)

    sp = cmd("metrics", "serve queue-level Prometheus metrics read from Redis", json_out=False)
    sp.add_argument("--port", type=int, default=9464, help="default 9464")
    sp.add_argument(
        "--host",
        default="127.0.0.1",
        help="listen address (default 127.0.0.1; 0.0.0.0 for all interfaces)",
    )
    sp.add_argument(
        "--batches",
        type=int,
        default=20,
        help="recent batches given per-batch series, besides the unfinished ones (default 20)",
    )
    _allow_host_arg(sp)
    sp.set_defaults(handler=cmd_metrics)

    sp = cmd(
        "serve",
        "a web page of batches and workers, refreshed live, and OpenAI's Files and Batches "
        "API under /v1",
        json_out=False,
    )
    sp.add_argument("--port", type=int, default=8470, help="default 8470")
    sp.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    sp.add_argument("--limit", type=int, default=50, help="most recent batches shown")
    _allow_host_arg(sp)
    sp.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="a key the OpenAI API under /v1 accepts as 'Authorization: Bearer KEY' "
        "(repeatable; BATCHQ_API_KEYS, comma-separated, keeps it out of ps)",
    )
    sp.add_argument(
        "--no-auth",
        action="store_true",
        help="serve the OpenAI API without a key beyond loopback (to anyone who can reach it)",
    )
    sp.set_defaults(handler=cmd_serve)

    sp = cmd("list", "recent batches, newest first")
    sp.add_argument("--limit", type=int, default=50)
    sp.set_defaults(handler=cmd_list)


def _allow_host_arg(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--allow-host",
        action="append",
        metavar="NAME",
        help="also answer requests whose Host header is NAME (repeatable; * for any), besides "
        "the listen address and, on loopback, localhost (BATCHQ_ALLOWED_HOSTS, comma-separated)",
    )
