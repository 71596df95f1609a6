"""batchq's HTTP servers: running one until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from .errors import ConfigError

__all__ = ["run_server"]


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
