"""A ``/v1/responses`` batch's output lines: the Response objects checked with the ``openai``
package's own type."""

from __future__ import annotations

import json

from openai.types.responses import Response

from batchq.records import Endpoint, Item, ItemResult, ItemStatus
from batchq.results.openai import OpenAILines

ITEM = Item(
    "r1",
    Endpoint.CHAT,
    {"model": "llama3.2", "messages": [], "options": {"num_predict": 300, "temperature": 0.2}},
)


def _result(done_reason: str) -> ItemResult:
    metrics = {"prompt_eval_count": 26, "eval_count": 290, "done_reason": done_reason}
    return ItemResult(
        index=3,
        custom_id="r1",
        status=ItemStatus.SUCCEEDED,
        response="Hello there",
        model="llama3.2",
        metrics=metrics,
    )


def _response(done_reason: str) -> Response:
    line = json.loads(
        OpenAILines("b_abc", 1700000000, responses=True).line(_result(done_reason), ITEM)
    )
    assert line["custom_id"] == "r1" and line["error"] is None
    assert line["response"]["status_code"] == 200
    return Response.model_validate(line["response"]["body"])


def test_a_finished_answer_is_a_completed_response() -> None:
    resp = _response("stop")
    assert resp.id == "resp_abc_3" and resp.object == "response"
    assert (resp.status, resp.incomplete_details, resp.model) == ("completed", None, "llama3.2")
    assert resp.created_at == 1700000000 and resp.output_text == "Hello there"
    [message] = resp.output
    assert message.type == "message" and message.role == "assistant"
    assert resp.usage is not None
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (26, 290)
    assert resp.usage.total_tokens == 316
    # The request's settings, repeated as OpenAI's Response does.
    assert (resp.max_output_tokens, resp.temperature, resp.top_p) == (300, 0.2, None)


def test_an_answer_cut_at_max_output_tokens_is_incomplete() -> None:
    resp = _response("length")
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"


def test_chat_lines_stay_chat_completions_outside_a_responses_batch() -> None:
    line = json.loads(OpenAILines("b_abc", 1).line(_result("stop"), ITEM))
    assert line["response"]["body"]["object"] == "chat.completion"
