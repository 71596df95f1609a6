"""``batchq serve``: one HTML page of batches, workers and Ollama hosts, polling a JSON
endpoint; and the plumbing that runs batchq's HTTP servers (this one and ``batchq metrics``)
until a signal."""

from __future__ import annotations

import asyncio
import signal
import sys
from importlib import resources
from typing import Any

from aiohttp import web

from batchq import clock
from batchq.errors import ConfigError
from batchq.monitor.hosts import HostCheck
from batchq.monitor.hosts_view import AutoLimits, host_rows
from batchq.monitor.tables import batch_rows
from batchq.store.batches import BatchStore
from batchq.store.presence import live_workers

__all__ = ["app", "page", "run_server", "status_json"]


async def run_server(application: web.Application, host: str, port: int, what: str) -> None:
    """Serve ``application`` until SIGINT or SIGTERM; says where on stderr."""
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        bound = runner.addresses[0][1]
        print(f"{what} on http://{host}:{bound}/", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    finally:
        await runner.cleanup()


def page() -> bytes:
    return resources.files("batchq.monitor").joinpath("web.html").read_bytes()


async def status_json(
    store: BatchStore, *, limit: int, auto_limits: AutoLimits | None = None
) -> dict[str, Any]:
    """What the page polls: recent batches (newest first), the live workers and their
    Ollama hosts."""
    now = clock.now_ms()
    batches = batch_rows(await store.recent(limit=limit), now)
    workers = await live_workers(store.redis, store.keys)
    ollama = await host_rows(store.redis, store.keys, workers, auto_limits=auto_limits)
    return {
        "now": clock.iso(now),
        "batches": batches,
        "workers": [w.to_json() for w in workers],
        "hosts": [h.to_json() for h in ollama],
    }


def app(
    store: BatchStore,
    *,
    limit: int = 50,
    hosts: HostCheck | None = None,
    auto_limits: AutoLimits | None = None,
) -> web.Application:
    """``GET /``: the page; ``GET /api/status``: the JSON it polls; ``hosts``: the Host
    headers answered (any without one); ``auto_limits``: see
    :func:`~batchq.monitor.hosts_view.host_rows`."""

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=page(), content_type="text/html", charset="utf-8")

    async def status(request: web.Request) -> web.Response:
        data = await status_json(store, limit=limit, auto_limits=auto_limits)
        # The page polls: a cached answer would freeze it.
        return web.json_response(data, headers={"Cache-Control": "no-store"})

    application = web.Application(middlewares=[hosts.middleware()] if hosts else [])
    application.router.add_get("/", index)
    application.router.add_get("/api/status", status)
    return application
