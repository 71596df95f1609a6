"""Anthropic's Message Batches API of ``batchq serve``, through the official ``anthropic``
client, against a live ``serve`` process, real workers and the simulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from anthropic import Anthropic
from anthropic.types.messages import MessageBatch

from batchq.sim.replies import expected_response
from batchq.store.batches import BatchStore
from batchq.store.connection import connect
from batchq.store.deadlines import expire
from batchq.store.keys import Keys
from tests.api.live import KEY, Served
from tests.procs import Workers, batchq, status
from tests.waits import wait_for_value

pytestmark = pytest.mark.e2e


@pytest.fixture
def claude(served: Served) -> Iterator[Anthropic]:
    with Anthropic(base_url=served.url, api_key=KEY, max_retries=0, timeout=60) as c:
        yield c


def _request(i: int, tag: str = "req", **params: Any) -> dict[str, Any]:
    return {
        "custom_id": f"{tag}-{i}",
        "params": {
            "model": "llama3.2",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": f"question {i}"}],
        }
        | params,
    }


def _ended(client: Anthropic, batch_id: str) -> MessageBatch:
    return wait_for_value(
        lambda: client.messages.batches.retrieve(batch_id),
        lambda b: b.processing_status == "ended",
        timeout=120,
        interval=0.1,
        what=f"{batch_id} ended",
    )


def _batches_of(env: dict[str, str]) -> int:
    return len(json.loads(batchq(env, "list", "--json", "--limit", "1000").stdout))


def test_a_batch_runs_to_the_end(claude: Anthropic, served: Served, tmp_path: Path) -> None:
    n = 12
    requests: list[Any] = [_request(i) for i in range(n)]
    # Text blocks, a system prompt as blocks, and a reply cut short at max_tokens.
    requests[1]["params"]["messages"] = [
        {"role": "user", "content": [{"type": "text", "text": "question 1"}]}
    ]
    requests[1]["params"]["system"] = [{"type": "text", "text": "Be brief."}]
    requests[2]["params"] |= {"max_tokens": 3, "temperature": 0.2, "top_k": 5, "top_p": 0.9}
    requests[3]["params"]["stop_sequences"] = ["\n\nHuman:"]
    batch = claude.messages.batches.create(requests=requests)
    assert batch.id.startswith("msgbatch_") and batch.type == "message_batch"
    assert batch.processing_status == "in_progress" and batch.results_url is None
    assert batch.request_counts.processing == n and batch.ended_at is None
    assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600
    native = (batch.model_extra or {})["batchq_batch_id"]
    with Workers(served.env, tmp_path) as workers:
        workers.start("--concurrency", "4")
        done = _ended(claude, batch.id)
    counts = done.request_counts
    assert (counts.succeeded, counts.processing, counts.errored) == (n, 0, 0)
    assert done.ended_at is not None and done.ended_at >= done.created_at
    assert done.results_url == f"{served.url}/v1/messages/batches/{batch.id}/results"
    results = list(claude.messages.batches.results(batch.id))
    assert [r.custom_id for r in results] == [f"req-{i}" for i in range(n)]  # input order
    for i, entry in enumerate(results):
        assert entry.result.type == "succeeded"
        message = entry.result.message
        assert message.id.startswith("msg_") and message.role == "assistant"
        assert message.model == "llama3.2" and message.usage.input_tokens > 0
        [block] = message.content
        assert block.type == "text"
        if i == 2:
            assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 3)
            assert len(block.text.split()) == 3
        else:
            # Ollama (and the simulator) report a stop sequence met as the end of the turn.
            assert message.stop_reason == "end_turn" and message.stop_sequence is None
            assert block.text == expected_response("llama3.2", f"question {i}")
    # An ordinary batchq batch: the CLI sees it.
    s = status(served.env, native)
    assert (s["state"], s["succeeded"], s["name"]) == ("completed", n, batch.id)
    assert claude.messages.batches.delete(batch.id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.batches.retrieve(batch.id)
    assert status(served.env, native)["state"] == "completed"  # the batchq batch stays


def test_cancel_gives_canceled_results(claude: Anthropic) -> None:
    requests: list[Any] = [_request(i, "c") for i in range(4)]
    batch = claude.messages.batches.create(requests=requests)
    with pytest.raises(anthropic.BadRequestError, match="still in progress"):
        claude.messages.batches.delete(batch.id)
    canceling = claude.messages.batches.cancel(batch.id)  # no worker: nothing in flight
    assert canceling.processing_status in ("canceling", "ended")
    assert canceling.cancel_initiated_at is not None
    done = _ended(claude, batch.id)
    assert done.request_counts.canceled == 4 and done.request_counts.processing == 0
    results = list(claude.messages.batches.results(batch.id))
    assert [r.custom_id for r in results] == [f"c-{i}" for i in range(4)]
    assert {r.result.type for r in results} == {"canceled"}
    assert claude.messages.batches.cancel(batch.id).processing_status == "ended"


def test_past_its_deadline_a_batch_expires(claude: Anthropic, served: Served) -> None:
    requests: list[Any] = [_request(i, "e") for i in range(3)]
    batch = claude.messages.batches.create(requests=requests)
    native = (batch.model_extra or {})["batchq_batch_id"]

    async def expire_now() -> bool:
        # The 24 hours up, what a worker's housekeeping does; no worker runs here.
        redis = connect(served.env["BATCHQ_REDIS_URL"])
        try:
            store = BatchStore(redis, Keys(served.env["BATCHQ_PREFIX"]))
            await redis.hset(store.keys.batch(native).meta, "deadline", "1")  # type: ignore[misc]
            return await expire(store, native)
        finally:
            await redis.aclose()

    assert asyncio.run(expire_now())
    done = _ended(claude, batch.id)
    assert done.request_counts.expired == 3 and done.ended_at is not None
    results = list(claude.messages.batches.results(batch.id))
    assert [(r.custom_id, r.result.type) for r in results] == [
        (f"e-{i}", "expired") for i in range(3)
    ]


def test_a_wrong_key_is_refused(served: Served) -> None:
    with (
        Anthropic(base_url=served.url, api_key="sk-wrong", max_retries=0) as wrong,
        pytest.raises(anthropic.AuthenticationError) as err,
    ):
        wrong.messages.batches.list()
    assert err.value.status_code == 401
    assert err.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    # The key as a bearer token (the client's auth_token) is taken too.
    with Anthropic(base_url=served.url, auth_token=KEY, max_retries=0) as bearer:
        assert bearer.messages.batches.list(limit=1).data is not None
    # Without a key at all, in Anthropic's shape too.
    raw = httpx.get(f"{served.url}/v1/messages/batches", timeout=10)
    assert raw.status_code == 401 and raw.json()["error"]["type"] == "authentication_error"


def test_an_unknown_id_is_not_found(claude: Anthropic) -> None:
    for batch_id in ("msgbatch_" + "0" * 24, "msgbatch_nope"):
        with pytest.raises(anthropic.NotFoundError) as err:
            claude.messages.batches.retrieve(batch_id)
        assert err.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.batches.cancel("msgbatch_" + "0" * 24)


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ({"params": {"max_tokens": "ten"}}, "requests[2] (custom_id 'bad-2'): params.max_tokens"),
        ({"params": {"tools": []}}, "requests[2] (custom_id 'bad-2'): params.tools"),
        ({"custom_id": "req-0"}, "requests[2] (custom_id 'req-0'): custom_id: used by"),
        ({"custom_id": "a b"}, "requests[2] (custom_id 'a b'): custom_id"),
        (
            {"params": {"messages": [{"role": "user", "content": [{"type": "image"}]}]}},
            "params.messages[0].content[0].type",
        ),
    ],
)
def test_an_invalid_request_queues_nothing(
    claude: Anthropic, served: Served, bad: dict[str, Any], where: str
) -> None:
    wrong = _request(2, "bad")
    wrong["params"] |= bad.pop("params", {})
    wrong |= bad
    before = _batches_of(served.env)
    requests: list[Any] = [_request(0), _request(1), wrong, _request(3)]
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.batches.create(requests=requests)
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert where in err.value.message
    assert _batches_of(served.env) == before


def test_bodies_that_are_not_a_batch_are_refused(served: Served) -> None:
    url = f"{served.url}/v1/messages/batches"
    headers = {"x-api-key": KEY}
    for body in (
        b"{}",
        b'{"requests": []}',
        b"[1]",
        b'{"requests": [1',
        b'{"requests": [], "x": 1}',
    ):
        r = httpx.post(url, content=body, headers=headers, timeout=10)
        assert r.status_code == 400, body
        assert r.json()["type"] == "error", body


def test_batches_list_in_pages(claude: Anthropic) -> None:
    one: list[Any] = [_request(0, "p")]
    ids = [claude.messages.batches.create(requests=one).id for _ in range(3)]
    first = claude.messages.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[:0:-1] and first.has_more
    assert first.first_id == ids[2] and first.last_id == ids[1]
    every = [b.id for b in claude.messages.batches.list(limit=2)]  # follows the pages
    assert [i for i in every if i in ids] == ids[::-1]
    assert len(every) == len(set(every))
    older = claude.messages.batches.list(limit=1, after_id=ids[2])
    assert [b.id for b in older.data] == [ids[1]] and older.has_more
    newer = claude.messages.batches.list(limit=1, before_id=ids[0])
    assert [b.id for b in newer.data] == [ids[1]] and newer.has_more
    newest = claude.messages.batches.list(limit=5, before_id=ids[1])
    assert [b.id for b in newest.data] == [ids[2]] and not newest.has_more
    for batch_id in ids:
        claude.messages.batches.cancel(batch_id)


def test_the_readme_example_runs_unchanged_but_for_base_url_and_key(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Anthropic's Message Batches, served by batchq", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    given = 'base_url="http://127.0.0.1:8470", api_key="my-batchq-key"'
    assert given in code
    exec(code.replace(given, f"base_url={served.url!r}, api_key={KEY!r}"), {})
    printed = capsys.readouterr().out
    batch_id = printed.split("id='", 1)[1].split("'", 1)[0]
    with Anthropic(base_url=served.url, api_key=KEY, max_retries=0) as claude:
        batch = claude.messages.batches.retrieve(batch_id)
        assert batch.request_counts.processing == 2
        claude.messages.batches.cancel(batch_id)
        _ended(claude, batch_id)
        results = list(claude.messages.batches.results(batch_id))
    assert [r.custom_id for r in results] == ["my-first-request", "my-second-request"]
