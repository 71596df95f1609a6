"""Results as the lines of an Anthropic Message Batch's results file:
``{"custom_id", "result": {"type", ...}}``, as the ``anthropic`` package's
``MessageBatchIndividualResponse``.

- A succeeded item: ``{"type": "succeeded", "message": Message}``; the Message has the reply as
  one text block, ``usage`` from Ollama's counts (``prompt_eval_count``, ``eval_count``) and
  ``stop_reason`` ``max_tokens`` when Ollama stopped at ``num_predict`` (``done_reason``
  ``length``), ``end_turn`` otherwise. Ollama reports a stop sequence it met as it reports the
  end of a turn (``done_reason`` ``stop``, the sequence cut from the text), so ``stop_sequence``
  is given only when the text still ends with one of the request's stop sequences (a server
  that keeps it); with Ollama a stop sequence shows as ``end_turn``.
- A failed item: ``{"type": "errored", "error": {"type": "error", "error": {"type",
  "message"}}}``, the inner type from Ollama's HTTP status (400 ``invalid_request_error``, 404
  ``not_found_error``, else ``api_error``).
- Cancelled and expired items: ``{"type": "canceled"}`` and ``{"type": "expired"}``.

Message ids are derived from the batch id and the item's index (``msg_<batch>_<index>``), so
reading the results twice gives the same lines.
"""

from __future__ import annotations

import json
from typing import Any

from batchq.records import Item, ItemResult, ItemStatus, tokens_of

__all__ = ["AnthropicLines", "error_type"]


def error_type(status_code: int | None) -> str:
    """Anthropic's error type for an HTTP status."""
    if status_code == 400:
        return "invalid_request_error"
    if status_code == 404:
        return "not_found_error"
    return "api_error"


def _stop(metrics: dict[str, Any], text: str, item: Item | None) -> tuple[str, str | None]:
    if metrics.get("done_reason") == "length":
        return "max_tokens", None
    options = item.body.get("options") if item else None
    stops = options.get("stop") if isinstance(options, dict) else None
    for stop in stops or ():
        if isinstance(stop, str) and stop and text.endswith(stop):
            return "stop_sequence", stop
    return "end_turn", None


class AnthropicLines:
    """Turns one batchq batch's results into Anthropic result lines."""

    def __init__(self, batch_id: str) -> None:
        self._tag = batch_id.removeprefix("b_")

    def line(self, result: ItemResult, item: Item | None) -> str:
        return json.dumps(self.record(result, item), separators=(",", ":"), ensure_ascii=False)

    def record(self, result: ItemResult, item: Item | None) -> dict[str, Any]:
        outcome: dict[str, Any]
        if result.status is ItemStatus.SUCCEEDED:
            outcome = {"type": "succeeded", "message": self.message(result, item)}
        elif result.status is ItemStatus.CANCELLED:
            outcome = {"type": "canceled"}
        elif result.status is ItemStatus.EXPIRED:
            outcome = {"type": "expired"}
        else:
            err = result.error
            message = err.message if err else "the request failed without a recorded reason"
            kind = error_type(err.status_code if err else None)
            error = {"type": kind, "message": message}
            outcome = {"type": "errored", "error": {"type": "error", "error": error}}
        return {"custom_id": result.custom_id, "result": outcome}

    def message(self, result: ItemResult, item: Item | None) -> dict[str, Any]:
        metrics = result.metrics or {}
        text = result.response or ""
        stop_reason, stop_sequence = _stop(metrics, text, item)
        prompt, output = tokens_of(metrics)
        return {
            "id": f"msg_{self._tag}_{result.index}",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": text}],
            "model": result.model or (item.model if item else ""),
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": {"input_tokens": prompt, "output_tokens": output},
        }
