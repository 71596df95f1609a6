"""Results as Anthropic Message Batch result lines."""

from __future__ import annotations

import json

from anthropic.types.messages import MessageBatchIndividualResponse

from batchq.records import Endpoint, Item, ItemError, ItemResult, ItemStatus
from batchq.results.anthropic import AnthropicLines


def _item(**options: object) -> Item:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "options": options}
    return Item("c-0", Endpoint.CHAT, body)


def _parse(line: str) -> MessageBatchIndividualResponse:
    return MessageBatchIndividualResponse.model_validate(json.loads(line))


def test_succeeded_lines_are_messages() -> None:
    lines = AnthropicLines("b_0123")
    metrics = {"done_reason": "length", "prompt_eval_count": 5, "eval_count": 3}
    ok = ItemResult(
        index=7,
        custom_id="c-0",
        status=ItemStatus.SUCCEEDED,
        response="a b c",
        model="m",
        metrics=metrics,
    )
    parsed = _parse(lines.line(ok, _item()))
    assert parsed.custom_id == "c-0" and parsed.result.type == "succeeded"
    message = parsed.result.message
    assert (message.id, message.stop_reason, message.stop_sequence) == (
        "msg_0123_7",
        "max_tokens",
        None,
    )
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 3)
    assert [(b.type, b.text) for b in message.content if b.type == "text"] == [("text", "a b c")]
    ended = ok.model_copy(update={"metrics": {"done_reason": "stop"}})
    assert _parse(lines.line(ended, _item())).result.message.stop_reason == "end_turn"  # type: ignore[union-attr]
    # A server that keeps the stop sequence in the text: which one is known.
    kept = ended.model_copy(update={"response": "a b END"})
    message = _parse(lines.line(kept, _item(stop=["END"]))).result.message  # type: ignore[union-attr]
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")


def test_other_outcomes() -> None:
    lines = AnthropicLines("b_1")
    failed = ItemResult(
        index=0,
        custom_id="c-0",
        status=ItemStatus.FAILED,
        error=ItemError(type="http_error", message="model not found", status_code=404),
    )
    errored = _parse(lines.line(failed, None)).result
    assert errored.type == "errored"
    assert (errored.error.error.type, errored.error.error.message) == (
        "not_found_error",
        "model not found",
    )
    timeout = failed.model_copy(update={"error": ItemError(type="timeout", message="slow")})
    assert _parse(lines.line(timeout, None)).result.error.error.type == "api_error"  # type: ignore[union-attr]
    for status, kind in ((ItemStatus.CANCELLED, "canceled"), (ItemStatus.EXPIRED, "expired")):
        result = ItemResult(index=0, custom_id="c-0", status=status)
        assert _parse(lines.line(result, None)).result.type == kind
