from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from batchq import clock
from batchq.monitor.hosts_view import HostRow
from batchq.monitor.tables import (
    batch_rows,
    batches_table,
    format_age,
    format_duration,
    format_limits,
    hosts_table,
)
from batchq.monitor.top import Snapshot
from batchq.monitor.top import render as top_render
from batchq.monitor.watch import Rates, View, make_view
from batchq.monitor.watch import render as watch_render
from batchq.options import SubmitOptions
from batchq.records import BatchState
from batchq.store.batches import BatchStore
from batchq.store.connection import connect
from batchq.store.keys import Keys
from batchq.store.presence import EndpointFacts, WorkerInfo
from tests.helpers import items, publish_worker, worker_info
from tests.helpers import status as batch_status
from tests.procs import batchq, env_for


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (-1, "-"),
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m00s"),
        (425, "7m05s"),
        (3600 * 3 + 12 * 60 + 9, "3h12m"),
        (86400 * 2 + 3600 * 4 + 5, "2d04h"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_age() -> None:
    assert format_age(None) == "-"
    assert format_age(90) == "1m30s ago"


def render(rows: list[dict[str, object]]) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(batches_table(rows))
    return console.export_text()


async def test_rows_and_table_show_progress_failures_and_age(store: BatchStore) -> None:
    old, _ = await store.submit(items(3), SubmitOptions(name="old [not markup]"))
    new, _ = await store.submit(items(1000))
    # Two items of the old batch are final: one succeeded, one failed.
    await store.redis.hset(store.keys.batch(old).meta, mapping={"succeeded": 1, "failed": 1})  # type: ignore[misc]
    created_ms = int(await store.redis.hget(store.keys.batch(old).meta, "created_at"))  # type: ignore[misc]

    rows = batch_rows(await store.recent(), now_ms=created_ms + 125_000)
    assert [r["batch_id"] for r in rows] == [new, old]
    r = rows[1]
    assert (r["done"], r["total"], r["failed"], r["state"]) == (2, 3, 1, "queued")
    assert r["age_s"] == pytest.approx(125.0, abs=0.01)
    json.dumps(rows)  # what --json prints

    text = render(rows)
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("b_")}
    assert "2/3" in lines[old] and "66.6" in lines[old] and "2m05s ago" in lines[old]
    assert "old [not markup]" in lines[old]
    assert "0/1000" in lines[new] and " 0.0 " in lines[new]


async def test_almost_done_is_not_shown_as_100_percent(store: BatchStore) -> None:
    bid, _ = await store.submit(items(2000))
    await store.redis.hset(store.keys.batch(bid).meta, "succeeded", "1999")  # type: ignore[misc]
    text = render(batch_rows(await store.recent(), clock.now_ms()))
    assert "99.9" in text and "100.0" not in text


def test_status_without_id_lists_batches(valkey_url: str, prefix: str, tmp_path: Path) -> None:
    env = env_for(valkey_url, prefix, tmp_path, "http://127.0.0.1:9")
    assert batchq(env, "status").stdout.strip() == "no batches"
    src = tmp_path / "in.txt"
    src.write_text("a\nb\nc\n")
    ids = [batchq(env, "submit", str(src), "--model", "m").stdout.strip() for _ in range(2)]

    table = batchq(env, "status").stdout
    header, *rest = table.splitlines()
    assert header.split()[:3] == ["batch", "state", "done/total"]
    body = [line for line in rest if line.startswith("b_")]
    # Newest first, each on one whole line even though stdout is a pipe.
    assert [line.split()[0] for line in body] == ids[::-1]
    assert all("queued" in line and "0/3" in line and "in.txt" in line for line in body)

    rows = json.loads(batchq(env, "status", "--json", "--limit", "1").stdout)
    assert [r["batch_id"] for r in rows] == [ids[1]]
    assert rows[0]["done"] == 0 and rows[0]["age_s"] >= 0


# Text that rich would read as markup (and fail on, for the stray closing tag).
MARKUP = "[bold]run[/] [/] [red"
META = "k[/]=[b]v"


def test_list_and_status_show_every_state_and_user_text_as_is(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    env = env_for(valkey_url, prefix, tmp_path, "http://127.0.0.1:9")
    src = tmp_path / "in.txt"
    src.write_text("a\nb\n")
    ids: dict[BatchState, str] = {}
    for state in BatchState:
        out = batchq(
            env,
            "submit",
            str(src),
            "--model",
            "m",
            "--name",
            f"{state} {MARKUP}",
            "--meta",
            META,
        ).stdout
        ids[state] = out.strip()
    # Paused and cancelled the way a user gets there; the states only workers reach, set
    # where the workers set them.
    batchq(env, "pause", ids[BatchState.PAUSED])
    batchq(env, "cancel", ids[BatchState.CANCELLED])
    asyncio.run(_set_states(valkey_url, prefix, ids))

    for command in ("status", "list"):
        proc = batchq(env, command)
        assert proc.stderr == ""
        lines = {
            line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("b_")
        }
        assert len(lines) == len(BatchState)
        for state, bid in ids.items():
            assert lines[bid].split()[1] == state.value
            assert f"{state} {MARKUP}" in lines[bid]
            assert META in lines[bid]


async def _set_states(url: str, prefix: str, ids: dict[BatchState, str]) -> None:
    client = connect(url)
    try:
        store = BatchStore(client, Keys(prefix))
        for state in (BatchState.RUNNING, BatchState.COMPLETED, BatchState.EXPIRED):
            await client.hset(store.keys.batch(ids[state]).meta, "state", state.value)  # type: ignore[misc]
    finally:
        await client.aclose()


def test_every_state_has_a_style_of_its_own() -> None:
    console = Console(width=200, color_system="truecolor", force_terminal=True)
    table = batches_table([_row(state) for state in BatchState])
    styles = {
        seg.text.strip(): seg.style.color
        for seg in console.render(table)
        if seg.text.strip() in BatchState.__members__.values() and seg.style
    }
    assert set(styles) == {s.value for s in BatchState}
    assert None not in styles.values() and len(set(styles.values())) == len(BatchState)


def _row(state: BatchState) -> dict[str, object]:
    return {
        "batch_id": f"b_{state.value}",
        "state": state.value,
        "done": 1,
        "total": 2,
        "failed": 1,
        "created_at": None,
        "age_s": None,
        "name": MARKUP,
        "metadata": {"k[/]": "[b]v"},
    }


NOW = clock.now_ms()
BATCH = "b_0123456789abcdef"
LONG_HOST = "gpu-node-17.eu-west-1.compute.internal"
WORKERS = [
    worker_info(
        f"{LONG_HOST}:123456:ab",
        endpoints=["http://ollama-a100-pool-3.ml.internal.example.com:11434", "http://gpu2:11434"],
        concurrency=16,
        running={BATCH: 12, "b_fedcba9876543210": 3},
        succeeded=123_456,
        failed=78,
        retried=910,
        last_error="server_busy: Ollama answered 503 Service Unavailable: server busy, retry",
        last_error_at=NOW - 5000,
        started_at=NOW - 3_600_000,
    ),
    worker_info(
        "ip-10-0-12-34:7:cd",
        endpoints=["http://[fd00:1234::17]:11434"],
        concurrency=4,
        running={BATCH: 1},
        started_at=NOW,
    ),
]
ROWS = {  # what each worker's row must show whole: host:pid, in flight, items/s
    WORKERS[0].worker_id: (f"{LONG_HOST}:123456", "15/16", "1234.5"),
    WORKERS[1].worker_id: ("ip-10-0-12-34:7", "1/4", "0.3"),
}


def _worker_cells(renderable: object, width: int) -> dict[str, list[str]]:
    """Each worker's row, split into its cells (columns are 3 spaces apart)."""
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    lines = console.export_text().splitlines()
    assert all(len(line.rstrip()) <= width for line in lines)
    found = {}
    for worker_id, (host, *_) in ROWS.items():
        [line] = [line for line in lines if line.startswith(host)]
        found[worker_id] = re.split(r" {2,}", line.strip())
    return found


def _rates() -> Rates:
    rates = Rates()
    rates.add(0, {w.worker_id: 0 for w in WORKERS})
    rates.add(10, {WORKERS[0].worker_id: 12_345, WORKERS[1].worker_id: 3})
    return rates


def _watch_view() -> View:
    rates = Rates()
    batch = batch_status(100_000, 0, batch_id=BATCH)
    for t, done in ((0.0, (0, 0)), (10.0, (12_345, 3))):
        ws = [replace(w, succeeded=n) for w, n in zip(WORKERS, done, strict=True)]
        view = make_view(batch, ws, rates, t)
    return view


@pytest.mark.parametrize("width", [80, 100, 160])
def test_worker_tables_keep_host_in_flight_and_rate_whole(width: int) -> None:
    snap = Snapshot(WORKERS, queued_jobs=12, now_ms=NOW + 90_000)
    top = _worker_cells(top_render(snap, _rates()), width)
    watched = _worker_cells(watch_render(_watch_view()), width)
    for worker_id, whole in ROWS.items():
        assert set(whole) <= set(top[worker_id]), top[worker_id]
        assert set(whole) <= set(watched[worker_id]), watched[worker_id]
    assert "12" in watched[WORKERS[0].worker_id]  # its items of the watched batch
    if width >= 160:  # room for the endpoints too, as written, brackets and all
        assert "http://[fd00:1234::17]:11434" in top[WORKERS[1].worker_id]


HOSTS = [
    HostRow(
        endpoint="http://ollama-a100-pool-3.ml.internal.example.com:11434",
        endpoint_id="e1",
        serving=["llama3.1:70b-instruct-q4_K_M"],
        loaded=["llama3.1:70b-instruct-q4_K_M", "nomic-embed-text", "qwen3:8b"],
        loads=17,
        auto_limits={"llama3.1:70b-instruct-q4_K_M": 6, "nomic-embed-text": 32},
        workers=4,
        in_flight=23,
    ),
    HostRow("http://gpu2:11434", "e2", serving=[], loaded=[], loads=None),
]


@pytest.mark.parametrize("width", [80, 100, 160, 240])
def test_hosts_table_keeps_model_loads_and_in_flight_whole(width: int) -> None:
    console = Console(width=width, record=True, color_system=None)
    console.print(hosts_table(HOSTS))
    lines = console.export_text().splitlines()
    assert all(len(line.rstrip()) <= width for line in lines)
    assert lines[0].split()[:1] == ["ollama"]
    first = next(re.split(r" {2,}", line.strip()) for line in lines if line.startswith("http://o"))
    assert {"llama3.1:70b-instruct-q4_K_M", "17", "23"} <= set(first), first
    second = next(re.split(r" {2,}", line.strip()) for line in lines if "gpu2" in line)
    assert second[:4] == ["http://gpu2:11434", "-", "-", "0"], second
    if width >= 240:  # room for all of it
        assert "llama3.1:70b-instruct-q4_K_M=6 nomic-embed-text=32" in first
        assert "llama3.1:70b-instruct-q4_K_M, nomic-embed-text, qwen3:8b" in first


def test_hosts_table_escapes_what_ollama_said() -> None:
    row = HostRow("http://h:1", "e", serving=["m\x1b[2J[red]"], loaded=[], loads=1)
    console = Console(width=200, record=True, color_system=None)
    console.print(hosts_table([row]))
    assert "m\\x1b[2J[red]" in console.export_text()


def test_format_limits() -> None:
    assert format_limits({}) == "-"
    assert format_limits({"b": 2, "a": 10}) == "a=10 b=2"


async def _publish(url: str, prefix: str, info: WorkerInfo) -> None:
    client = connect(url)
    try:
        await publish_worker(BatchStore(client, Keys(prefix)), info)
    finally:
        await client.aclose()


def test_status_without_id_shows_the_ollama_hosts(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    env = env_for(valkey_url, prefix, tmp_path, "http://127.0.0.1:9")
    assert "Ollama hosts" not in batchq(env, "status").stdout  # no live worker, no host
    url = "http://gpu7:11434/?key=s3cret"
    facts = EndpointFacts(["llama3.2"], ["llama3.2", "qwen3:8b"], 2)
    asyncio.run(
        _publish(valkey_url, prefix, worker_info("w:1:a", endpoints=[url], hosts={url: facts}))
    )
    out = batchq(env, "status").stdout
    assert out.splitlines()[:2] == ["no batches", ""] and "Ollama hosts" in out
    [row] = [line for line in out.splitlines() if line.startswith("http://gpu7")]
    cells = re.split(r" {2,}", row.strip())
    assert cells[:5] == ["http://gpu7:11434/?key=***", "llama3.2", "-", "2", "-"], cells
    assert "s3cret" not in out
    # Unchanged: --json is the list of batches, and `list` shows batches only.
    assert json.loads(batchq(env, "status", "--json").stdout) == []
    assert "Ollama hosts" not in batchq(env, "list").stdout
