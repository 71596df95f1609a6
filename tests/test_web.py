"""``batchq serve``: the JSON endpoint over plain HTTP (always), and the page rendered by a real
headless Chromium (skipped where none is installed)."""

from __future__ import annotations

import asyncio
import html
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from batchq import clock
from batchq.batches import BatchStore
from batchq.connection import connect
from batchq.keys import Keys
from batchq.presence import WorkerInfo
from batchq.web import app

from .conftest import free_port
from .procs import env_for
from .test_batches import items

EVIL = '<img src=x onerror="document.title=1">'


async def fill(store: BatchStore) -> tuple[str, str]:
    """A batch part done (named with markup), a cancelled one, and a live worker."""
    cancelled, _ = await store.submit(items(3), name="old")
    await store.cancel(cancelled)
    running, _ = await store.submit(items(10), name=EVIL)
    meta = store.keys.batch(running).meta
    await store.redis.hset(meta, mapping={"state": "running", "succeeded": 6, "failed": 1})  # type: ignore[misc]
    await store.redis.hset(meta, mapping={"retried": 4, "running": 2})  # type: ignore[misc]
    worker = WorkerInfo(
        "gpu7:99:ab",
        host="gpu7",
        pid=99,
        endpoints=["http://gpu7:11434"],
        concurrency=4,
        running={running: 2},
        succeeded=6,
        failed=1,
        last_error=f"server_busy: {EVIL}",
    )
    await store.redis.zadd(store.keys.workers, {worker.worker_id: clock.now_ms() + 60_000})
    await store.redis.hset(store.keys.worker_info(worker.worker_id), mapping=worker.to_mapping())  # type: ignore[misc]
    return running, cancelled


@pytest.fixture
async def served(store: BatchStore) -> AsyncIterator[str]:
    runner = web.AppRunner(app(store), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_json_endpoint_over_http(store: BatchStore, served: str) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=5) as client:
        empty = (await client.get("/api/status")).json()
        assert (empty["batches"], empty["workers"]) == ([], [])
        running, cancelled = await fill(store)
        reply = await client.get("/api/status")
        page = await client.get("/")
    assert reply.status_code == 200 and reply.headers["cache-control"] == "no-store"
    data = reply.json()
    assert [b["batch_id"] for b in data["batches"]] == [running, cancelled]
    b = data["batches"][0]
    assert (b["state"], b["done"], b["total"], b["succeeded"], b["failed"]) == (
        "running",
        7,
        10,
        6,
        1,
    )
    assert (b["retried"], b["running"], b["queued"], b["name"]) == (4, 2, 1, EVIL)
    assert data["batches"][1]["state"] == "cancelled" and data["batches"][1]["done"] == 3
    [w] = data["workers"]
    assert (w["host"], w["in_flight"], w["endpoints"]) == ("gpu7", 2, ["http://gpu7:11434"])
    assert data["now"].endswith("+00:00")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "api/status" in page.text and "<script>" in page.text


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


@pytest.mark.e2e
@pytest.mark.skipif(
    chromium() is None, reason="no Chromium on PATH (Debian: apt-get install chromium)"
)
def test_page_renders_in_headless_chromium(valkey_url: str, prefix: str, tmp_path: Path) -> None:
    async def setup() -> tuple[str, str]:
        client = connect(valkey_url)
        try:
            return await fill(BatchStore(client, Keys(prefix)))
        finally:
            await client.aclose()

    running, cancelled = asyncio.run(setup())
    port = free_port()
    env = env_for(valkey_url, prefix, tmp_path, "http://127.0.0.1:9")
    cmd = [sys.executable, "-m", "batchq", "serve", "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url + "api/status", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert server.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(0.1)
        browser = chromium()
        assert browser
        dom = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                f"--user-data-dir={tmp_path / 'chromium'}",
                # Virtual time runs the page's scripts and its first polls, then dumps.
                "--virtual-time-budget=5000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    finally:
        server.terminate()
        _, err = server.communicate(timeout=10)
    assert server.returncode == 0 and f"status page on http://127.0.0.1:{port}/" in err

    rows = re.findall(r'<tr data-batch="([^"]+)" data-state="([^"]+)">(.*?)</tr>', dom)
    assert [(bid, state) for bid, state, _ in rows] == [
        (running, "running"),
        (cancelled, "cancelled"),
    ]
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", rows[0][2])]
    assert cells[0] == running and cells[1] == EVIL  # the name shown as text, not markup
    assert '<progress max="10" value="7">' in rows[0][2]
    assert "7/10 (70.0%)" in cells and cells[5:8] == ["6", "1", "4"]
    assert "3/3 (100.0%)" in rows[1][2]
    worker = re.search(r'<tr data-worker="gpu7:99:ab">(.*?)</tr>', dom)
    assert worker and "gpu7:99" in worker[1] and "2/4" in worker[1]
    assert "http://gpu7:11434" in worker[1] and "server_busy" in worker[1]
    assert "<img" not in dom  # markup in names and errors stayed text
    assert '<div id="error"></div>' in dom and '<div id="updated">updated ' in dom
