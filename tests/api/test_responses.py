"""``/v1/responses`` batches through ``batchq serve``'s Batches API, with the official
``openai`` client, real workers and the simulator: Responses requests in, Response objects
out; bad lines refused by number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from openai.types.responses import Response

from tests.api.live import Served, chat_lines, finished
from tests.procs import Workers

pytestmark = pytest.mark.e2e


def _lines(bodies: list[dict[str, Any]]) -> bytes:
    lines = [
        {"custom_id": f"r-{i}", "method": "POST", "url": "/v1/responses", "body": body}
        for i, body in enumerate(bodies)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def test_responses_batch_gives_response_objects(
    client: OpenAI, served: Served, tmp_path: Path
) -> None:
    bodies: list[dict[str, Any]] = [
        {"model": "llama3.2", "input": "Tell me a joke.", "max_output_tokens": 200},
        {
            "model": "llama3.2",
            "instructions": "Answer briefly.",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "Why?"}]}],
            "temperature": 0.2,
            "top_p": 0.9,
        },
        # The simulator answers with far more than one token: cut short.
        {"model": "llama3.2", "input": "Go on.", "max_output_tokens": 1},
    ]
    upload = client.files.create(file=("responses.jsonl", _lines(bodies)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h"
    )
    assert batch.status == "in_progress" and batch.endpoint == "/v1/responses"
    with Workers(served.env, tmp_path) as workers:
        workers.start("--concurrency", "4")
        done = finished(client, batch.id, "completed")
    assert done.output_file_id and done.error_file_id is None
    lines = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert [x["custom_id"] for x in lines] == ["r-0", "r-1", "r-2"]
    responses = [Response.model_validate(x["response"]["body"]) for x in lines]
    for resp in responses:
        assert resp.id.startswith("resp_") and resp.object == "response"
        assert resp.model == "llama3.2" and resp.output_text
        assert resp.usage is not None and resp.usage.output_tokens > 0
        assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    assert [r.status for r in responses] == ["completed", "completed", "incomplete"]
    cut = responses[2]
    assert cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage is not None and cut.usage.output_tokens == 1
    assert (cut.max_output_tokens, responses[1].temperature, responses[1].top_p) == (1, 0.2, 0.9)


@pytest.mark.parametrize(
    ("data", "line", "param"),
    [
        (_lines([{"model": "m", "input": "a"}, {"model": "m"}]), 2, "body.input"),
        (
            _lines([{"model": "m", "input": [{"role": "user", "content": 5}]}]),
            1,
            "body.input[0].content",
        ),
        # A chat completions line is chat too, but not what the batch is for.
        (_lines([{"model": "m", "input": "a"}]) + chat_lines(1), 2, "url"),
    ],
)
def test_bad_responses_lines_fail_the_batch_by_line(
    client: OpenAI, data: bytes, line: int, param: str
) -> None:
    upload = client.files.create(file=("bad.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h"
    )
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data
    [error] = batch.errors.data
    assert (error.line, error.param) == (line, param) and error.message


def test_responses_lines_are_refused_in_a_chat_batch(client: OpenAI) -> None:
    data = chat_lines(1) + _lines([{"model": "m", "input": "a"}])
    upload = client.files.create(file=("mixed.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "failed" and batch.errors is not None
    [error] = batch.errors.data or []
    assert (error.line, error.param) == (2, "url") and "/v1/responses" in (error.message or "")
