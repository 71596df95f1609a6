"""A simulated Ollama server over a real socket, for tests and benchmarks.

It speaks enough of Ollama's native API (generate, chat, embed, tags, ps, show, version) that the
official ``ollama`` client parses every reply, and models what matters to a batch queue: per-model
parallel slots with a FIFO wait, a bounded pending queue (503), model residency as Ollama's
``server/sched.go`` decides it (loaded-model and VRAM limits, load time, keep_alive expiry; see
:mod:`batchq.sim.scheduler`), slot-dependent eval speed, batched embedding cost, and injected
failures. Reply text is a pure function of
(seed, model, prompt), so a test can check that every result belongs to its prompt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import threading
from collections.abc import Iterator

from batchq.sim.config import SimConfig, parse_model_speeds, parse_models
from batchq.sim.replies import expected_embedding, expected_response, runs_away
from batchq.sim.server import SimServer

__all__ = [
    "SimConfig",
    "SimServer",
    "expected_embedding",
    "expected_response",
    "parse_model_speeds",
    "parse_models",
    "running_sim",
    "runs_away",
    "serve",
]


@contextlib.contextmanager
def running_sim(config: SimConfig | None = None, *, port: int = 0) -> Iterator[SimServer]:
    """Run a simulator on a background thread with its own loop, for sync tests and benchmarks."""
    server = SimServer(config)
    ready: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, asyncio.Event]]
    ready = concurrent.futures.Future()

    async def main() -> None:
        stop = asyncio.Event()
        try:
            await server.start(port=port)
        except BaseException as e:
            ready.set_exception(e)
            return
        ready.set_result((asyncio.get_running_loop(), stop))
        await stop.wait()
        await server.stop()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="batchq-sim", daemon=True)
    thread.start()
    loop, stop = ready.result(timeout=30)
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)


def serve(config: SimConfig, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM: the `batchq sim` command."""

    async def main() -> None:
        server = SimServer(config)
        url = await server.start(host, port)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        print(f"batchq sim (simulated Ollama) listening on {url}", flush=True)
        try:
            await stop.wait()
        finally:
            await server.stop()

    asyncio.run(main())
