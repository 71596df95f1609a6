"""Tests of batchq.client against a real server, real ``batchq worker`` processes and the
simulator in its own process — and of the README's Python examples, run as they are written."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batchq import (
    BatchClient,
    BatchNotFound,
    BatchState,
    BatchStateError,
    BatchStatus,
    ConfigError,
    Endpoint,
    InputError,
    Item,
    ItemNotFound,
    ItemResult,
    ItemStatus,
    RedisUnavailable,
    Settings,
    SyncBatchClient,
)
from batchq.sim.process import expected_response
from tests.conftest import free_port
from tests.procs import Workers, batchq, env_for, simulator
from tests.waits import async_wait_until

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parent.parent / "README.md"
# 8 tokens at 2 tokens/s: 4 s an item, so that it surely finishes after the instant items of
# every other model, which a loaded machine may take a second or two to get through.
SLOW_MODEL = "qwen3:8b"
UNKNOWN = "b_0000000000000000"


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = ["--parallel", "8", "--max-loaded", "4", "--eval-tokens-per-s", "0"]
    args += ["--prompt-tokens-per-s", "0", "--model-speeds", f"{SLOW_MODEL}=2,gemma3:4b=40"]
    with simulator(tmp_path_factory.mktemp("sim"), *args) as url:
        yield url


@pytest.fixture
def env(redis_url: str, prefix: str, tmp_path: Path, sim_url: str) -> dict[str, str]:
    return env_for(redis_url, prefix, tmp_path / "home", sim_url)


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    with Workers(env, tmp_path) as w:
        yield w


def prompt_of(item: Item) -> str:
    if item.endpoint is Endpoint.CHAT:
        return str(item.body["messages"][-1]["content"])
    return str(item.body["prompt"])


def check_answers(results: list[ItemResult], items: list[Item]) -> None:
    """Each result is its own item's, answered by the simulator."""
    for r in results:
        item = items[r.index]
        assert (r.custom_id, r.model, r.status) == (item.custom_id, item.model, "succeeded"), r
        assert r.response == expected_response(item.model, prompt_of(item)), r


async def test_async_client_from_submit_to_results(
    redis_url: str, prefix: str, workers: Workers, tmp_path: Path
) -> None:
    values: list[Any] = [
        {"custom_id": "slow", "prompt": "take your time", "model": SLOW_MODEL},
        "Why is the sky blue?",
        {"messages": [{"role": "user", "content": "hi there"}], "custom_id": "chat"},
        Item("item", Endpoint.GENERATE, {"model": "gemma3:4b", "prompt": "an Item"}),
        *(f"prompt {i}" for i in range(4)),
    ]
    async with BatchClient(redis_url=redis_url, prefix=prefix) as client:
        batch = await client.submit(values, model="llama3.2", name="mixed")
        assert (batch.total, batch.name, batch.state) == (8, "mixed", BatchState.QUEUED)
        workers.start()
        done: list[ItemResult] = []
        first: BatchStatus | None = None
        async for result in client.as_completed(batch.batch_id, poll=0.05):
            first = first or await client.status(batch.batch_id)
            done.append(result)
        # Results came as they finished: the slow item, first in the input, came last, and
        # the first came while the batch was still running.
        assert first is not None and first.finished_at is None
        assert done[-1].custom_id == "slow"
        assert sorted(r.index for r in done) == list(range(8))

        final = await client.wait(batch.batch_id, timeout=60)
        assert (final.state, final.succeeded) == (BatchState.COMPLETED, 8)
        in_order = [r async for r in client.results(batch.batch_id)]
        assert in_order == sorted(done, key=lambda r: r.index)
        items = [i async for i in _stored_items(client, batch.batch_id)]
        check_answers(in_order, items)
        assert [s.batch_id for s in await client.list(limit=5)] == [batch.batch_id]

        out = tmp_path / "out.jsonl"
        assert await client.write_results(batch.batch_id, out) == 8
        lines = [ItemResult.model_validate_json(line) for line in out.read_text().splitlines()]
        assert lines == in_order
        stream = io.StringIO()
        assert await client.write_results(batch.batch_id, stream) == 8
        assert stream.getvalue() == out.read_text()


async def test_control_pause_resume_retry_item_and_on_done(
    redis_url: str, prefix: str, workers: Workers
) -> None:
    values: list[str | dict[str, str]] = ["a", "b"]
    values.append({"custom_id": "bad", "prompt": "c", "model": "missing:1b"})
    async with BatchClient(redis_url=redis_url, prefix=prefix) as client:
        batch = await client.submit(
            values, model="llama3.2", metadata={"team": "nlp"}, deadline=timedelta(hours=1)
        )
        assert batch.metadata == {"team": "nlp"} and batch.deadline
        bid = batch.batch_id
        assert (await client.pause(bid)).state == BatchState.PAUSED
        workers.start()
        # A worker is up (however long that took): a paused batch sends it nothing.
        await async_wait_until(
            lambda: client.store.redis.zcard(client.store.keys.workers), what="a worker"
        )
        await asyncio.sleep(1.0)
        held = await client.status(bid)
        assert (held.state, held.queued) == (BatchState.PAUSED, 3)
        assert (await client.resume(bid)).state == BatchState.QUEUED

        # The unknown model fails (404, one attempt); retried from the loop, it comes again.
        seen: list[tuple[str, ItemStatus, int]] = []
        async with asyncio.timeout(120):
            async for r in client.as_completed(bid, poll=0.05):
                seen.append((r.custom_id, r.status, r.attempts))
                if r.custom_id == "bad" and r.attempts == 1:
                    assert await client.retry(bid, ids=["bad"]) == 1
        assert sorted(seen) == [
            ("0", ItemStatus.SUCCEEDED, 1),
            ("1", ItemStatus.SUCCEEDED, 1),
            ("bad", ItemStatus.FAILED, 1),
            ("bad", ItemStatus.FAILED, 2),
        ]
        info = await client.item(bid, "bad")
        assert (info.status, info.attempts, len(info.errors)) == ("failed", 2, 2)
        assert info.result is not None and info.result.attempts == 2
        done: list[BatchStatus] = []

        async def record(s: BatchStatus) -> None:
            done.append(s)

        final = await client.wait(bid, timeout=60, on_done=record)
        assert done == [final] and (final.succeeded, final.failed) == (2, 1)

        with pytest.raises(ConfigError, match="say which items"):
            await client.retry(bid, failed=False)
        with pytest.raises(ItemNotFound):
            await client.retry(bid, ids=["bad", "nope"])
        with pytest.raises(BatchStateError):
            await client.pause(bid)  # final: nothing to pause

    # The blocking twins; on_done runs in the caller's thread.
    with SyncBatchClient(redis_url=redis_url, prefix=prefix) as sync:
        assert sync.retry(bid) == 1  # the failed ones, by default
        threads: list[threading.Thread] = []
        final = sync.wait(
            bid,
            timeout=120,
            poll=0.05,
            on_done=lambda s: threads.append(threading.current_thread()),
        )
        assert threads == [threading.current_thread()] and final.failed == 1
        assert sync.item(bid, "bad").attempts == 3
        assert sync.pause(sync.submit(["x"], model="llama3.2").batch_id).state == "paused"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("metadata", {"k": 1}, "keys and values must be strings"),
        ("metadata", [("k", "v")], "a mapping of strings to strings, not list"),
        ("metadata", {f"k{i}": "v" for i in range(17)}, "at most 16 pairs"),
        ("deadline", "yesterday", "neither a duration"),
        ("deadline", timedelta(0), "is not after now"),
        ("deadline", datetime(2000, 1, 1), "is in the past"),
        ("deadline", 90, "not int"),
        ("notify", "ftp://host/x", "is not an http:// or https:// URL"),
    ],
)
async def test_submit_options_are_checked_before_any_item_is_read(
    redis_url: str, prefix: str, option: str, value: Any, message: str
) -> None:
    def never() -> Iterator[str]:
        raise AssertionError("items read before the options were checked")
        yield  # pragma: no cover

    async with BatchClient(redis_url=redis_url, prefix=prefix) as client:
        with pytest.raises(InputError, match=message) as info:
            await client.submit(never(), model="m", **{option: value})
        assert info.value.field == option
        assert await client.list() == []


async def test_a_private_notify_target_is_refused_when_the_setting_says_so(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    url = "http://u:s3cr3t@127.0.0.1:8080/h"
    deny = Settings(home=tmp_path / "home", notify_allow_private=False)
    async with BatchClient(deny, redis_url=redis_url, prefix=prefix) as client:
        with pytest.raises(InputError, match="private or loopback") as info:
            await client.submit(["x"], model="m", notify=url)
        assert info.value.field == "notify" and "s3cr3t" not in str(info.value)
        assert await client.list() == []
    async with BatchClient(redis_url=redis_url, prefix=prefix) as client:
        assert (await client.submit(["x"], model="m", notify=url)).total == 1


async def _stored_items(client: BatchClient, batch_id: str) -> Any:
    total = (await client.status(batch_id)).total
    raw = await client.store.redis.hmget(  # type: ignore[misc]
        client.store.keys.batch(batch_id).items, [str(i) for i in range(total)]
    )
    for r in raw:
        yield Item.loads(r)


def test_sync_client_from_plain_code(
    redis_url: str, prefix: str, workers: Workers, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"question {i}\n" for i in range(8)))
    with SyncBatchClient(redis_url=redis_url, prefix=prefix) as client:
        batch = client.submit(prompts, model="gemma3:4b")  # 0.2 s each
        assert (batch.name, batch.total) == ("prompts.txt", 8)
        workers.start()
        seen: list[tuple[BatchStatus, threading.Thread]] = []
        final = client.wait(
            batch.batch_id,
            timeout=120,
            poll=0.05,
            on_progress=lambda s: seen.append((s, threading.current_thread())),
        )
        statuses = [s for s, _ in seen]
        assert {t for _, t in seen} == {threading.current_thread()}
        assert len(statuses) >= 3 and statuses[-1] == final and final.succeeded == 8
        done = [s.succeeded for s in statuses]
        assert done == sorted(done)

        results = list(client.results(batch.batch_id))
        assert [r.index for r in results] == list(range(8))
        assert sorted(client.as_completed(batch.batch_id), key=lambda r: r.index) == results
        items = [
            Item(str(i), Endpoint.GENERATE, {"model": "gemma3:4b", "prompt": f"question {i}"})
            for i in range(8)
        ]
        check_answers(results, items)
        assert client.write_results(batch.batch_id, tmp_path / "out.jsonl", wait=True) == 8
        assert client.list(limit=1)[0].batch_id == batch.batch_id


async def test_sync_client_inside_a_running_event_loop(redis_url: str, prefix: str) -> None:
    asyncio.get_running_loop()  # where asyncio.run() would refuse to start
    with SyncBatchClient(redis_url=redis_url, prefix=prefix) as client:
        batch = client.submit((f"p{i}" for i in range(2500)), model="llama3.2")
        other = client.submit(["never run"], model="llama3.2")
        with pytest.raises(TimeoutError, match=r"did not finish within 0\.2 s"):
            client.wait(other.batch_id, timeout=0.2)

        cancelled = client.cancel(batch.batch_id)
        assert (cancelled.state, cancelled.cancelled) == (BatchState.CANCELLED, 2500)
        assert client.wait(batch.batch_id, timeout=60) == cancelled
        got = list(client.as_completed(batch.batch_id))
        assert sorted(r.index for r in got) == list(range(2500))
        assert {r.status for r in got} == {ItemStatus.CANCELLED}
        first = next(iter(client.results(batch.batch_id)))  # left unfinished: closed for us
        assert (first.index, first.custom_id) == (0, "0")
        assert client.status(batch.batch_id) == cancelled
    await asyncio.sleep(0)  # the caller's loop was never blocked for good
    with pytest.raises(RuntimeError, match="closed"):
        client.status(batch.batch_id)


async def test_errors_are_the_commands_errors(redis_url: str, prefix: str, tmp_path: Path) -> None:
    async with BatchClient(redis_url=redis_url, prefix=prefix) as client:
        with pytest.raises(InputError) as info:
            await client.submit(["fine", {"prompt": 3}], model="m")
        assert str(info.value) == "line 2, field 'prompt': must be a string, got number"
        assert await client.list() == []  # nothing was queued

        for call in (
            client.status(UNKNOWN),
            client.cancel(UNKNOWN),
            client.wait(UNKNOWN),
            client.write_results(UNKNOWN, tmp_path / "x.jsonl"),
            client.results(UNKNOWN).__anext__(),
            client.as_completed(UNKNOWN).__anext__(),
        ):
            with pytest.raises(BatchNotFound, match=UNKNOWN):
                await call

        batch = await client.submit(["p"], model="m")
        with pytest.raises(ConfigError, match=r"cannot write .*missing/out\.jsonl\.part"):
            await client.write_results(batch.batch_id, tmp_path / "missing" / "out.jsonl")

    with pytest.raises(RuntimeError, match="closed"):
        await client.status(batch.batch_id)
    with pytest.raises(ConfigError, match="invalid setting prefix"):
        BatchClient(redis_url=redis_url, prefix="a b")
    down = BatchClient(redis_url=f"redis://:secret@127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisUnavailable, match=r"cannot reach Redis at redis://\*\*\*@") as e:
        await down.status(batch.batch_id)
    assert "secret" not in str(e.value)
    with pytest.raises(RedisUnavailable), SyncBatchClient(redis_url=down.settings.redis_url):
        pass  # pragma: no cover
    assert "batchq-client" not in {t.name for t in threading.enumerate()}
    # The blocking client raises the same, from its thread into the caller's.
    with SyncBatchClient(redis_url=redis_url, prefix=prefix) as sync:
        with pytest.raises(BatchNotFound):
            sync.status(UNKNOWN)
        with pytest.raises(InputError, match="line 1, field 'model'"):
            sync.submit(["no model"])


def test_cli_results_to_an_unwritable_path(redis_url: str, prefix: str, tmp_path: Path) -> None:
    env = env_for(redis_url, prefix, tmp_path / "home", "http://127.0.0.1:9")
    batch_id = batchq(env, "submit", "-", "--model", "m", input='"p"\n').stdout.strip()
    proc = batchq(env, "results", batch_id, "-o", str(tmp_path / "no" / "r.jsonl"), check=False)
    # Not "cannot reach Redis", which is what a file error used to be reported as.
    assert proc.returncode == 2
    where = tmp_path / "no" / "r.jsonl.part"
    assert proc.stderr == f"batchq: error: cannot write {where}: No such file or directory\n"


def readme_examples() -> list[str]:
    text = README.read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_readme_has_the_examples() -> None:
    examples = readme_examples()
    assert len(examples) == 2
    assert "SyncBatchClient()" in examples[0] and "as_completed" in examples[0]
    assert "BatchClient()" in examples[1] and "on_progress" in examples[1]


@pytest.mark.parametrize("example", [0, 1])
def test_readme_example_runs(
    example: int, env: dict[str, str], workers: Workers, tmp_path: Path, redis_url: str
) -> None:
    workers.start()
    script = tmp_path / "example.py"
    script.write_text(readme_examples()[example])
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    match = re.fullmatch(r"batch (b_[0-9a-f]{16}): (\d+) items", lines[0])
    assert match, proc.stdout
    batch_id, total = match[1], int(match[2])
    with SyncBatchClient(redis_url=redis_url, prefix=env["BATCHQ_PREFIX"]) as client:
        stored = list(client.results(batch_id))
        items = asyncio.run(_items_of(redis_url, env["BATCHQ_PREFIX"], batch_id))
    check_answers(stored, items)
    printed = {line for line in lines if not line.startswith("batch ")}
    assert {f"{r.custom_id} succeeded {r.response}" for r in stored} <= printed
    assert len(stored) == total and len(printed) >= total


async def _items_of(redis_url: str, prefix: str, batch_id: str) -> list[Item]:
    async with BatchClient(redis_url=redis_url, prefix=prefix) as client:
        return [i async for i in _stored_items(client, batch_id)]
