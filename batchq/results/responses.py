"""A succeeded ``/v1/responses`` item's answer as a Response object (the ``openai`` package's
``openai.types.responses.Response``): one assistant message with one ``output_text`` part.

``status`` is ``incomplete`` with ``incomplete_details.reason`` ``max_output_tokens`` when
Ollama stopped at ``num_predict``, ``completed`` otherwise; ``usage`` comes from Ollama's counts
as the other OpenAI bodies' does (:func:`batchq.records.tokens_of`). ``created_at`` is when the
batch started (batchq does not store a time per item). The input side is
:mod:`batchq.inputs.responses`.
"""

from __future__ import annotations

from typing import Any

from batchq.records import Item, ItemResult, tokens_of

__all__ = ["response_body"]


def response_body(
    ref: str, result: ItemResult, created: int, item: Item | None = None
) -> dict[str, Any]:
    """The Response for ``result`` (``ref``: the id stem that leads back to the item; ``item``:
    its request, whose sampling settings the Response repeats, as OpenAI's does)."""
    metrics = result.metrics or {}
    options = (item.body.get("options") or {}) if item else {}
    prompt, completion = tokens_of(metrics)
    cut = metrics.get("done_reason") == "length"
    status = "incomplete" if cut else "completed"
    text = {"type": "output_text", "text": result.response or "", "annotations": []}
    message = {
        "type": "message",
        "id": f"msg_{ref}",
        "role": "assistant",
        "status": status,
        "content": [text],
    }
    return {
        "id": f"resp_{ref}",
        "object": "response",
        "created_at": created,
        "status": status,
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "error": None,
        "model": result.model or "",
        "output": [message],
        "parallel_tool_calls": False,
        "tool_choice": "none",
        "tools": [],
        "max_output_tokens": options.get("num_predict"),
        "temperature": options.get("temperature"),
        "top_p": options.get("top_p"),
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        },
    }
