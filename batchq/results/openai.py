"""Results as OpenAI Batch API output lines: ``batchq results --format openai``.

Every line is ``{"id", "custom_id", "response", "error"}``, as in an OpenAI batch's output and
error files, so code written for those reads batchq's results unchanged.

- A succeeded item: ``response`` is ``{"status_code": 200, "request_id", "body"}`` and ``error``
  is null. The body's shape follows the Ollama endpoint the item went to: a chat item
  (``messages``, ``/v1/chat/completions``) gets a ``chat.completion``, a generate item (a
  prompt, ``/v1/completions``) a ``text_completion``, as ``/v1/completions`` answers, and
  an embeddings item (``input``, ``/v1/embeddings``) a list of embeddings, as
  ``/v1/embeddings`` answers (``usage`` then has only ``prompt_tokens`` and ``total_tokens``);
  in a ``/v1/responses`` batch of the API, a chat item gets a Response
  (:mod:`batchq.results.responses`).
  ``usage`` comes from Ollama's counts: ``prompt_tokens`` is ``prompt_eval_count`` (Ollama leaves
  it out, meaning 0, when the whole prompt was cached), ``completion_tokens`` is ``eval_count``.
  ``finish_reason`` is ``length`` when Ollama stopped at ``num_predict``, ``stop`` otherwise.
  ``created`` is when the batch started (batchq does not store a time per item).
- A failed item: ``error`` is ``{"code", "message"}`` with batchq's error type as the code, so
  one check of ``error`` finds every failure. When Ollama answered with an HTTP error,
  ``response`` also carries its ``status_code`` and an OpenAI-style error body; otherwise (a
  timeout, attempts exhausted, ...) ``response`` is null.
- A cancelled item: ``response`` null, ``error.code`` ``batch_cancelled``, as OpenAI reports the
  requests a cancelled batch never ran.

Ids are derived from the batch id and the item's index (``batch_req_<batch>_<index>``), so
writing the results twice gives identical files and an id leads back to its item.
"""

from __future__ import annotations

import json
from typing import Any

from batchq import vectors
from batchq.records import Endpoint, Item, ItemResult, ItemStatus, tokens_of
from batchq.results.responses import response_body

__all__ = ["CANCELLED_MESSAGE", "OpenAILines"]

CANCELLED_MESSAGE = "This request could not be executed before the batch was cancelled."


def _usage(metrics: dict[str, Any]) -> dict[str, int]:
    prompt, completion = tokens_of(metrics)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _finish_reason(metrics: dict[str, Any]) -> str:
    # Ollama's other reasons (load, unload) have no OpenAI counterpart; nothing was cut short.
    return "length" if metrics.get("done_reason") == "length" else "stop"


def _error_type(status_code: int) -> str:
    # The types Ollama's own OpenAI-compatible endpoints give the same statuses.
    if status_code == 400:
        return "invalid_request_error"
    if status_code == 404:
        return "not_found_error"
    return "api_error"


class OpenAILines:
    """Turns one batch's results into OpenAI batch output lines."""

    def __init__(self, batch_id: str, created: int, *, responses: bool = False) -> None:
        """``responses``: chat answers as Response objects (a ``/v1/responses`` batch's)."""
        self._tag = batch_id.removeprefix("b_")
        self._created = created
        self._responses = responses

    def line(self, result: ItemResult, item: Item | None) -> str:
        record = self.record(result, item)
        if result.embeddings is not None:
            return vectors.dumps(record)  # the vectors are already JSON text
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False)

    def record(self, result: ItemResult, item: Item | None) -> dict[str, Any]:
        ref = f"{self._tag}_{result.index}"
        response: dict[str, Any] | None = None
        error: dict[str, str] | None = None
        if result.status is ItemStatus.SUCCEEDED:
            endpoint = item.endpoint if item else Endpoint.CHAT
            body = self._body(endpoint, ref, result, item)
            response = {"status_code": 200, "request_id": f"req_{ref}", "body": body}
        elif result.status is ItemStatus.CANCELLED:
            error = {"code": "batch_cancelled", "message": CANCELLED_MESSAGE}
        else:
            err = result.error
            code = err.type if err else "unknown_error"
            message = err.message if err else "the item failed without a recorded reason"
            error = {"code": code, "message": message}
            status = err.status_code if err else None
            if status is not None and status >= 400:
                body = {"error": {"message": message, "type": _error_type(status)}}
                body["error"] |= {"param": None, "code": code}
                response = {"status_code": status, "request_id": f"req_{ref}", "body": body}
        return {
            "id": f"batch_req_{ref}",
            "custom_id": result.custom_id,
            "response": response,
            "error": error,
        }

    def _body(
        self, endpoint: Endpoint, ref: str, result: ItemResult, item: Item | None
    ) -> dict[str, Any]:
        metrics = result.metrics or {}
        model = result.model or ""
        if endpoint is Endpoint.EMBED:
            prompt, _ = tokens_of(metrics)
            data = [
                {"object": "embedding", "index": i, "embedding": vectors.vector_json(vector)}
                for i, vector in enumerate(result.embeddings or [])
            ]
            usage = {"prompt_tokens": prompt, "total_tokens": prompt}
            return {"object": "list", "data": data, "model": model, "usage": usage}
        if endpoint is Endpoint.CHAT and self._responses:
            return response_body(ref, result, self._created, item)
        text = result.response or ""
        if endpoint is Endpoint.GENERATE:
            choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None}
            return {
                "id": f"cmpl-{ref}",
                "object": "text_completion",
                "created": self._created,
                "model": model,
                "system_fingerprint": "fp_ollama",
                "choices": [choice | {"finish_reason": _finish_reason(metrics)}],
                "usage": _usage(metrics),
            }
        message = {"role": "assistant", "content": text}
        return {
            "id": f"chatcmpl-{ref}",
            "object": "chat.completion",
            "created": self._created,
            "model": model,
            "system_fingerprint": "fp_ollama",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _finish_reason(metrics),
                }
            ],
            "usage": _usage(metrics),
        }
