"""``batchq serve``: the JSON endpoint over plain HTTP (always), and the page rendered by a real
headless Chromium (skipped where none is installed)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from batchq import clock
from batchq.monitor.web import app, status_json
from batchq.options import SubmitOptions
from batchq.records import BatchState
from batchq.store.admission import endpoint_id
from batchq.store.batches import BatchStore
from batchq.store.connection import connect
from batchq.store.keys import Keys
from batchq.store.models import Serving
from batchq.store.presence import EndpointFacts
from tests.browser import Page, chromium, open_page
from tests.conftest import free_port
from tests.helpers import items, worker_info
from tests.procs import env_for
from tests.waits import wait_until

EVIL = '<img src=x onerror="document.title=1">'
LONG_NAME = "nightly-eval-llama3.2-8b-instruct-q4_K_M-2025-06-01-long-context-set.jsonl"
META = {"team": "nlp-research", "run": "2025-06-01 nightly eval, long-context", "x": EVIL}


async def fill(store: BatchStore) -> tuple[str, str]:
    """A batch part done (named with markup), a cancelled one, and a live worker."""
    cancelled, _ = await store.submit(items(3), SubmitOptions(name="old"))
    await store.cancel(cancelled)
    running, _ = await store.submit(
        items(10), SubmitOptions(name=EVIL, metadata=META, priority=5, weight=2.5)
    )
    meta = store.keys.batch(running).meta
    await store.redis.hset(meta, mapping={"state": "running", "succeeded": 6, "failed": 1})  # type: ignore[misc]
    await store.redis.hset(meta, mapping={"retried": 4, "running": 2})  # type: ignore[misc]
    worker = worker_info(
        "gpu7:99:ab",
        endpoints=["http://gpu7:11434"],
        hosts={"http://gpu7:11434": EndpointFacts(["qwen3:8b"], ["qwen3:8b"], 2)},
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
    [h] = data["hosts"]
    assert h == {
        "endpoint": "http://gpu7:11434",
        "endpoint_id": endpoint_id("http://gpu7:11434"),
        "serving": ["qwen3:8b"],
        "loaded": ["qwen3:8b"],
        "loads": None,
        "auto_limits": {},
        "workers": 1,
        "in_flight": 2,
    }
    assert data["now"].endswith("+00:00")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "api/status" in page.text and "<script>" in page.text


async def test_json_shows_the_auto_limits_it_is_given(store: BatchStore) -> None:
    await fill(store)

    async def limits(endpoint: str) -> dict[str, int]:
        return {"qwen3:8b": 3} if endpoint == endpoint_id("http://gpu7:11434") else {}

    data = await status_json(store, limit=5, auto_limits=limits)
    assert data["hosts"][0]["auto_limits"] == {"qwen3:8b": 3}


async def test_json_endpoint_survives_a_bad_stored_time(store: BatchStore, served: str) -> None:
    bid, _ = await store.submit(items(2))
    huge = str(86_400_000 * 99999999999999999999)  # what --deadline 99999999999999999999d stored
    bad = {"deadline": huge, "created_at": "x"}
    await store.redis.hset(store.keys.batch(bid).meta, mapping=bad)  # type: ignore[misc]
    async with httpx.AsyncClient(base_url=served, timeout=5) as client:
        reply = await client.get("/api/status")
    assert reply.status_code == 200
    [b] = reply.json()["batches"]
    assert (b["batch_id"], b["deadline"]) == (bid, "9999-12-31T23:59:59.999+00:00")


async def fill_every_state(store: BatchStore) -> dict[str, str]:
    """:func:`fill`'s batches, one in each other state, and the finished ones that read
    wrong: every item failed; nothing ran before the cancel. By role: their ids."""
    running, cancelled = await fill(store)
    ids = {"running": running, "cancelled_none_ran": cancelled}
    ids["queued"], _ = await store.submit(items(2), SubmitOptions(name=LONG_NAME, metadata=META))
    ids["paused"], _ = await store.submit(items(2))
    await store.pause(ids["paused"])
    finished = {
        "all_failed": ("completed", {"failed": 4}),
        "completed": ("completed", {"succeeded": 4}),
        "some_failed": ("completed", {"succeeded": 3, "failed": 1}),
        "expired": ("expired", {"succeeded": 1, "expired": 3}),
    }
    for role, (state, counts) in finished.items():
        ids[role], _ = await store.submit(items(4))
        await store.redis.hset(  # type: ignore[misc]
            store.keys.batch(ids[role]).meta,
            mapping={"state": state, "finished_at": clock.now_ms(), **counts},
        )
    pool3 = "http://ollama-a100-pool-3.ml.internal.example.com:11434"
    # Its host serves the model of the batches ("m"): one load so far.
    await Serving(store.redis, store.keys).pick(
        endpoint_id(pool3), now_ms=clock.now_ms(), switch_after_ms=60_000, hold_ms=60_000
    )
    worker = worker_info(
        "gpu-node-17.eu-west-1.compute.internal:123456:ab",
        endpoints=[pool3, "http://ollama-a100-pool-4.ml.internal.example.com:11434"],
        hosts={pool3: EndpointFacts(["m"], ["m", EVIL], 2)},
        concurrency=16,
        running={running: 2},
        succeeded=123_456,
        last_error="server_busy: Ollama answered 503 Service Unavailable: " + "x" * 120,
    )
    await store.redis.zadd(store.keys.workers, {worker.worker_id: clock.now_ms() + 60_000})
    await store.redis.hset(store.keys.worker_info(worker.worker_id), mapping=worker.to_mapping())  # type: ignore[misc]
    return ids


@contextlib.contextmanager
def serving(valkey_url: str, prefix: str, tmp_path: Path, *args: str) -> Iterator[str]:
    """``batchq serve`` as a process (with ``args``); yields its URL once it answers."""
    port = free_port()
    env = env_for(valkey_url, prefix, tmp_path, "http://127.0.0.1:9")
    cmd = [sys.executable, "-m", "batchq", "serve", "--port", str(port), *args]
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"

        def answers() -> bool:
            assert server.poll() is None, "the server exited"
            return httpx.get(url + "api/status", timeout=5).raise_for_status().is_success

        wait_until(answers, interval=0.1, what="the status page", ignore=(httpx.HTTPError,))
        yield url
    finally:
        server.terminate()
        _, err = server.communicate(timeout=10)
    assert server.returncode == 0 and f"status page on http://127.0.0.1:{port}/" in err


async def _shown(page: Page, url: str, width: int) -> None:
    await page.goto(url, width)
    await page.wait_for("document.getElementById('updated').textContent.startsWith('updated')")


@pytest.mark.e2e
@pytest.mark.skipif(
    chromium() is None, reason="no Chromium on PATH (Debian: apt-get install chromium)"
)
def test_page_renders_in_headless_chromium(valkey_url: str, prefix: str, tmp_path: Path) -> None:
    async def setup() -> dict[str, str]:
        client = connect(valkey_url)
        try:
            return await fill_every_state(BatchStore(client, Keys(prefix)))
        finally:
            await client.aclose()

    ids = asyncio.run(setup())

    async def browse(url: str) -> tuple[str, dict[str, Any], bytes]:
        async with open_page(tmp_path / "chromium") as page:
            await _shown(page, url, 1280)
            dom = await page.eval("document.documentElement.outerHTML")
            return dom, await page.eval(LAYOUT_JS), await page.screenshot()

    with serving(valkey_url, prefix, tmp_path) as url:
        dom, layout, png = asyncio.run(browse(url))
    (tmp_path / "page-1280.png").write_bytes(png)  # to look at, from pytest's --basetemp
    running, cancelled = ids["running"], ids["cancelled_none_ran"]

    roles = ("expired", "some_failed", "completed", "all_failed", "paused", "queued")
    order = [ids[role] for role in roles]
    assert layout["order"] == [*order, running, cancelled]  # newest first
    rows = layout["rows"]
    assert {rows[bid]["state"] for bid in rows} == {s.value for s in BatchState}
    run = rows[running]["cells"]
    assert (run["batch"], run["name"]) == (running, EVIL)  # the name shown as text, not markup
    assert (
        run["metadata"]
        == f"team=nlp-research · run=2025-06-01 nightly eval, long-context · x={EVIL}"
    )
    assert (run["priority"], run["weight"]) == ("5", "2.5")
    assert run["progress"] == "7/10 done (70.0%)"
    assert [run[c] for c in ("succeeded", "failed", "retried")] == ["6", "1", "4"]
    assert rows[running]["bar"] == [["succeeded", "60%"], ["failed", "10%"], ["running", "20%"]]
    assert rows[ids["queued"]]["cells"]["name"] == LONG_NAME
    assert rows[ids["queued"]]["cells"]["priority"] == "0"

    # Every item failed: not a green success with a full green bar.
    failed = rows[ids["all_failed"]]
    assert failed["cells"]["state"] == "all failed" and failed["class"] == "state-failed"
    assert (
        failed["bar"] == [["failed", "100%"]]
        and failed["cells"]["progress"] == "0/4 succeeded (0.0%)"
    )
    ok = rows[ids["completed"]]
    assert ok["class"] == "state-completed" and ok["cells"]["progress"] == "4/4 succeeded (100.0%)"
    assert _red(failed["color"]) and not _red(ok["color"])
    some = rows[ids["some_failed"]]
    assert (some["cells"]["state"], some["class"]) == ("completed", "state-partial")
    # Cancelled before anything ran: nothing succeeded, and it says so.
    none_ran = rows[cancelled]
    assert none_ran["cells"]["progress"] == "0/3 succeeded (0.0%)"
    assert none_ran["bar"] == [["dropped", "100%"]]
    # Each state in a colour of its own, none in the text's.
    colours = {r["class"]: r["color"] for r in rows.values()}
    assert (
        len(set(colours.values())) == len(colours) and layout["text_color"] not in colours.values()
    )
    for bid, r in rows.items():
        finished = r["state"] in ("completed", "cancelled", "expired")
        assert r["cells"]["eta"] == ("" if finished else "-"), (bid, r)

    worker = layout["workers"]["gpu-node-17.eu-west-1.compute.internal:123456:ab"]
    assert layout["workers"]["gpu7:99:ab"]["last_error"] == f"server_busy: {EVIL}"
    assert worker["worker"] == "gpu-node-17.eu-west-1.compute.internal:123456"
    assert worker["ollama"] == (
        "http://ollama-a100-pool-3.ml.internal.example.com:11434"
        "http://ollama-a100-pool-4.ml.internal.example.com:11434"
    )
    assert worker["in_flight"] == "2/16" and worker["last_error"].startswith("server_busy")
    # Its Ollama hosts: the one serving "m" after one load, and one no model was picked for.
    gpu7, pool3, pool4 = layout["hosts"]  # in order of their URLs
    assert (gpu7["endpoint"], gpu7["serving"], gpu7["in_flight"]) == (
        "http://gpu7:11434",
        "qwen3:8b",
        "2",
    )
    assert pool3 == {
        "endpoint": "http://ollama-a100-pool-3.ml.internal.example.com:11434",
        "serving": "m",
        "loaded": "m" + EVIL,
        "loads": "1",
        "auto_limit": "-",
        "workers": "1",
        "in_flight": "2",
    }
    assert pool4["endpoint"].endswith("pool-4.ml.internal.example.com:11434")
    assert [pool4[c] for c in ("serving", "loaded", "loads", "in_flight")] == ["-", "-", "-", "0"]
    # No horizontal scrollbar at 1280 px, with long names, metadata, endpoints and errors.
    assert layout["scroll_width"] <= 1280 and layout["widest_table"] <= 1280, layout
    assert "<img" not in dom  # markup in names, metadata and errors stayed text
    assert '<div id="error"></div>' in dom and '<div id="updated">updated ' in dom


def _red(css_colour: str) -> bool:
    r, g, b = (int(v) for v in re.findall(r"\d+", css_colour)[:3])
    return r > 150 and g < 80 and b < 80


# What the tests read off the rendered page: each row's cells by column, its state cell's
# class and computed colour, its bar's parts; the workers; and the layout's widths.
LAYOUT_JS = """(() => {
  const cells = tr => Object.fromEntries([...tr.cells].map(td => [td.dataset.col, td.textContent]));
  const batches = [...document.querySelectorAll("#batches tr[data-batch]")];
  const rows = {};
  for (const tr of batches) {
    const state = tr.querySelector("[data-col=state]");
    rows[tr.dataset.batch] = {
      state: tr.dataset.state,
      cells: cells(tr),
      class: state.className,
      color: getComputedStyle(state).color,
      bar: [...tr.querySelectorAll(".bar > span")].map(s => [s.className, s.style.width]),
    };
  }
  return {
    order: batches.map(tr => tr.dataset.batch),
    rows,
    workers: Object.fromEntries([...document.querySelectorAll("#workers tr[data-worker]")].map(
      tr => [tr.dataset.worker, cells(tr)])),
    hosts: [...document.querySelectorAll("#hosts tr[data-endpoint]")].map(cells),
    text_color: getComputedStyle(document.body).color,
    scroll_width: document.documentElement.scrollWidth,
    widest_table: Math.max(...[...document.querySelectorAll("table")].map(
      t => t.getBoundingClientRect().right)),
  };
})()"""


# What a DNS-rebinding page's requests carry: its own domain, sometimes dressed as ours.
FORGED_HOSTS = ["evil.example:8470", "127.0.0.1.evil.example", "localhost.evil.example"]


def test_serve_refuses_a_forged_host_header(valkey_url: str, prefix: str, tmp_path: Path) -> None:
    with serving(valkey_url, prefix, tmp_path, "--allow-host", "status.lan") as url:
        for host in FORGED_HOSTS:
            for path in ("api/status", ""):
                reply = httpx.get(url + path, headers={"Host": host}, timeout=5)
                assert reply.status_code == 421, (host, path)
                assert "batches" not in reply.text and "--allow-host" in reply.text
        for host in ("status.lan:8470", "localhost", "127.0.0.1"):
            reply = httpx.get(url + "api/status", headers={"Host": host}, timeout=5)
            assert reply.status_code == 200 and "batches" in reply.json(), host
