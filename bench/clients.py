"""Which HTTP client a worker should use: CPU per streamed request against the simulator.

    .venv/bin/python bench/clients.py --requests 3000 --concurrency 16

Starts a zero-latency simulator, then sends the same streamed ``/api/generate`` calls with
httpx, with httpx over an aiohttp transport (when ``httpx-aiohttp`` is installed), with bare
aiohttp, and with batchq's ``OllamaClient``, one after another in the same run; prints
requests/s and this process's CPU per request, and each one's ratio to httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from _harness import MODEL, Sim, http_loop, prompt_text, self_cpu_s


def _body(i: int) -> dict[str, Any]:
    return {"model": MODEL, "prompt": prompt_text(i), "stream": True}


async def _gather(n: int, c: int, one: Callable[[int], Awaitable[None]]) -> None:
    sem = asyncio.Semaphore(c)

    async def bounded(i: int) -> None:
        async with sem:
            await one(i)

    await asyncio.gather(*(bounded(i) for i in range(n)))


async def with_httpx(url: str, n: int, c: int, transport: Any = None) -> None:
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=60, transport=transport
    ) as client:

        async def one(i: int) -> None:
            async with client.stream("POST", "/api/generate", json=_body(i)) as r:
                async for line in r.aiter_lines():
                    if line:
                        json.loads(line)

        await _gather(n, c, one)


async def with_httpx_aiohttp(url: str, n: int, c: int) -> None:
    from httpx_aiohttp import AiohttpTransport  # type: ignore[import-not-found,unused-ignore]

    def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c))

    await with_httpx(url, n, c, AiohttpTransport(client=session))


async def with_aiohttp(url: str, n: int, c: int) -> None:
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=c)) as s:

        async def one(i: int) -> None:
            async with s.post("/api/generate", json=_body(i)) as r:
                async for line in r.content:
                    if line.strip():
                        json.loads(line)

        await _gather(n, c, one)


async def with_batchq(url: str, n: int, c: int) -> None:
    await http_loop(url, [prompt_text(i) for i in range(n)], concurrency=c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    n, c = args.requests, args.concurrency
    clients: dict[str, Callable[[str, int, int], Coroutine[Any, Any, None]]] = {
        "httpx": with_httpx,
        "httpx + aiohttp transport": with_httpx_aiohttp,
        "aiohttp": with_aiohttp,
        "batchq OllamaClient": with_batchq,
    }
    logs = Path(tempfile.mkdtemp(prefix="batchq-clients-"))
    print(f"{n} streamed requests, concurrency {c}, zero-latency simulator")
    first: float | None = None
    with Sim(logs / "sim.log", parallel=64, latency=0.0) as sim:
        for name, run in clients.items():
            cpu0, t0 = self_cpu_s(), time.perf_counter()
            try:
                asyncio.run(run(sim.url, n, c))
            except ImportError as e:
                print(f"{name:27s} skipped ({e})")
                continue
            secs, cpu = time.perf_counter() - t0, self_cpu_s() - cpu0
            first = first or n / secs
            print(
                f"{name:27s} {n / secs:7.0f} req/s ({n / secs / first:4.1f}x)"
                f"  client CPU {1000 * cpu / n:.2f} ms/request"
            )


if __name__ == "__main__":
    main()
