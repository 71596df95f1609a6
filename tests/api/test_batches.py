"""OpenAI's Batches API of ``batchq serve``, through the official ``openai`` client, against a
live ``serve`` process, real workers and the simulator."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from batchq.store.batches import BatchStore
from batchq.store.connection import connect
from batchq.store.deadlines import expire_due
from batchq.store.keys import Keys
from tests.api.live import Served, chat_lines, finished
from tests.openai_lines import parse_line
from tests.procs import Workers, batchq, simulator, status, wait_for
from tests.waits import wait_until

pytestmark = pytest.mark.e2e


def test_batch_runs_to_completion(client: OpenAI, served: Served, tmp_path: Path) -> None:
    n = 30
    upload = client.files.create(file=("batchinput.jsonl", chat_lines(n)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"team": "nlp"},
    )
    assert batch.status == "in_progress" and batch.id.startswith("batch_")
    assert batch.request_counts is not None and batch.request_counts.total == n
    assert batch.metadata == {"team": "nlp"} and batch.input_file_id == upload.id
    assert batch.expires_at is not None and batch.expires_at - batch.created_at == 24 * 3600
    native = (batch.model_extra or {})["batchq_batch_id"]
    with Workers(served.env, tmp_path) as workers:
        workers.start("--concurrency", "8")
        done = finished(client, batch.id, "completed")
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (n, 0)
    assert done.output_file_id and done.error_file_id is None
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.usage is not None and done.usage.output_tokens > 0
    out = client.files.retrieve(done.output_file_id)
    assert out.purpose == "batch_output"
    text = client.files.content(done.output_file_id).text
    assert out.bytes == len(text.encode())
    lines = text.splitlines()
    assert [json.loads(line)["custom_id"] for line in lines] == [f"req-{i}" for i in range(n)]
    for line in lines:
        parsed, body = parse_line(line)
        assert body is not None and parsed.response is not None
    page = httpx.get(f"{served.url}/api/status", timeout=5).json()
    assert native in [b["batch_id"] for b in page["batches"]]
    # An ordinary batchq batch: the CLI sees it.
    s = status(served.env, native)
    assert (s["state"], s["succeeded"], s["name"], s["metadata"]) == (
        "completed",
        n,
        "batchinput.jsonl",
        {"team": "nlp"},
    )


def _batches_of(env: dict[str, str]) -> int:
    return len(json.loads(batchq(env, "list", "--json", "--limit", "1000").stdout))


@pytest.mark.parametrize(
    ("bad", "line", "param"),
    [
        ({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions"}, 3, "body"),
        (
            {"custom_id": "x", "url": "/v1/completions", "body": {"model": "m", "prompt": "p"}},
            3,
            "url",
        ),
        ("not json", 3, None),
    ],
)
def test_an_invalid_input_file_fails_naming_its_line(
    client: OpenAI, served: Served, bad: Any, line: int, param: str | None
) -> None:
    good = chat_lines(2).decode()
    raw = bad if isinstance(bad, str) else json.dumps(bad)
    data = f"{good}{raw}\n{good.replace('req-', 'later-')}".encode()
    before = _batches_of(served.env)
    upload = client.files.create(file=("bad.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "failed" and batch.failed_at
    assert batch.errors is not None and batch.errors.data
    [error] = batch.errors.data
    assert (error.line, error.param) == (line, param) and error.message
    assert client.batches.retrieve(batch.id).status == "failed"
    assert _batches_of(served.env) == before  # nothing queued


def test_cancel_gives_cancelled_lines(client: OpenAI) -> None:
    upload = client.files.create(file=("c.jsonl", chat_lines(5, "c")), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="90m",  # type: ignore[arg-type]  # batchq takes any duration
    )
    assert batch.expires_at is not None and batch.expires_at - batch.created_at == 90 * 60
    assert batch.metadata is None
    cancelling = client.batches.cancel(batch.id)  # no worker runs: nothing in flight
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = finished(client, batch.id, "cancelled")
    assert done.cancelled_at and done.output_file_id is None and done.error_file_id
    lines = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert [x["custom_id"] for x in lines] == [f"c-{i}" for i in range(5)]
    assert {x["error"]["code"] for x in lines} == {"batch_cancelled"}
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(_failed_batch(client))


def test_past_its_window_a_batch_expires_then_runs_again(
    client: OpenAI, served: Served, tmp_path: Path
) -> None:
    upload = client.files.create(file=("e.jsonl", chat_lines(4, "e")), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="1s",  # type: ignore[arg-type]  # batchq takes any duration
    )
    assert batch.expires_at is not None
    native = (batch.model_extra or {})["batchq_batch_id"]

    async def expire() -> list[str]:
        redis = connect(served.env["BATCHQ_REDIS_URL"])
        try:
            # What a worker's housekeeping does on its heartbeat; no worker runs here, so
            # none of the items starts first.
            return await expire_due(BatchStore(redis, Keys(served.env["BATCHQ_PREFIX"])))
        finally:
            await redis.aclose()

    wait_until(lambda: native in asyncio.run(expire()), what="the deadline acted on")
    done = finished(client, batch.id, "expired")
    assert done.expired_at and done.output_file_id is None and done.error_file_id
    assert done.request_counts is not None and done.request_counts.failed == 4
    lines = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert [x["custom_id"] for x in lines] == [f"e-{i}" for i in range(4)]
    assert {x["error"]["code"] for x in lines} == {"batch_expired"}
    assert {x["response"] for x in lines} == {None}
    # Run again with batchq (an ordinary batch), it finishes again with files of its own.
    batchq(served.env, "retry", native, "--expired")
    assert client.batches.retrieve(batch.id).status == "in_progress"
    with Workers(served.env, tmp_path) as workers:
        workers.start()
        again = finished(client, batch.id, "completed")
    assert again.output_file_id and again.error_file_id is None
    text = client.files.content(again.output_file_id).text
    assert [json.loads(x)["custom_id"] for x in text.splitlines()] == [f"e-{i}" for i in range(4)]


def test_cancel_waits_for_the_requests_in_flight(
    client: OpenAI, served: Served, tmp_path: Path
) -> None:
    upload = client.files.create(file=("slow.jsonl", chat_lines(20, "s")), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    native = (batch.model_extra or {})["batchq_batch_id"]
    with (
        simulator(tmp_path, "--latency", "3", "--eval-tokens-per-s", "0") as slow,
        Workers(served.env, tmp_path) as workers,
    ):
        workers.start("--concurrency", "2", env=served.env | {"OLLAMA_HOST": slow})
        wait_for(served.env, native, lambda s: s["running"] >= 1)
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling"  # two requests are still at Ollama
        assert client.batches.retrieve(batch.id).status == "cancelling"
        done = finished(client, batch.id, "cancelled")
    assert done.request_counts is not None and done.cancelled_at and done.error_file_id
    ran = done.request_counts.completed
    lines = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert len(lines) == 20 - ran and {x["error"]["code"] for x in lines} == {"batch_cancelled"}


def _failed_batch(client: OpenAI) -> str:
    upload = client.files.create(file=("f.jsonl", b"[]\n"), purpose="batch")
    return client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    ).id


def test_batches_list_in_pages(client: OpenAI) -> None:
    ids = [_failed_batch(client) for _ in range(3)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[:0:-1] and first.has_more
    every = [b.id for b in client.batches.list(limit=2)]  # follows the pages
    assert [i for i in every if i in ids] == ids[::-1]
    assert len(every) == len(set(every))


def test_batch_requests_are_checked(client: OpenAI) -> None:
    upload = client.files.create(file=("ok.jsonl", chat_lines(1)), purpose="batch")
    cases: list[dict[str, Any]] = [
        {"endpoint": "/v1/moderations", "param": "endpoint"},
        {"completion_window": "soon", "param": "completion_window"},
        {"metadata": {str(i): "v" for i in range(17)}, "param": "metadata"},
    ]
    for case in cases:
        param = case.pop("param")
        args: dict[str, Any] = {
            "input_file_id": upload.id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        } | case
        with pytest.raises(openai.BadRequestError) as err:
            client.batches.create(**args)
        assert err.value.param == param
