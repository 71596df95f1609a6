"""The shapes of OpenAI's Files and Batches API as ``batchq serve`` answers them: the error
body, the File and Batch objects (as the ``openai`` package's ``FileObject`` and ``Batch``),
list pages, and the checks of ``POST /v1/batches``'s fields.

Timestamps are whole seconds, as OpenAI's are, from the Redis server's clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from batchq.errors import BatchqError
from batchq.records import Endpoint

__all__ = [
    "BATCH_ENDPOINTS",
    "ApiError",
    "batch_object",
    "error_body",
    "file_object",
    "list_page",
    "parse_window",
    "query_int",
    "seconds",
    "sort_score",
]

# The endpoints a batch may name, and the native endpoint each one's lines are checked against.
BATCH_ENDPOINTS = {
    "/v1/chat/completions": Endpoint.CHAT,
    "/v1/completions": Endpoint.GENERATE,
    "/v1/embeddings": Endpoint.EMBED,
    "/v1/responses": Endpoint.CHAT,
}

_WINDOW = re.compile(r"^(?:\d+(?:\.\d+)?[smhd])+$")


class ApiError(BatchqError):
    """A request the API refuses: answered with ``status`` and OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, param=self.param, code=self.code)


def error_body(
    message: str,
    type: str,
    *,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def seconds(ms: object) -> int | None:
    """Stored epoch ms (a string from a hash) as OpenAI's whole seconds; None if unset."""
    if ms is None or ms == "":
        return None
    try:
        return int(str(ms)) // 1000
    except (TypeError, ValueError):
        return None


def file_object(file_id: str, meta: dict[str, str]) -> dict[str, Any]:
    """A File object (``openai.types.FileObject``) from its stored metadata."""
    return {
        "id": file_id,
        "object": "file",
        "bytes": int(meta.get("bytes", 0)),
        "created_at": seconds(meta.get("created_at")) or 0,
        "filename": meta.get("filename", ""),
        "purpose": meta.get("purpose", "batch"),
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def list_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """A cursor page as OpenAI's list endpoints answer (the client pages with ``after`` the
    last id)."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def parse_window(value: object) -> str:
    """``completion_window``: OpenAI's ``"24h"``, or, as batchq's extension, any duration
    (``"48h"``, ``"90m"``, ``"1h30m"``, ``"2d"``), which becomes the batch's deadline."""
    if not isinstance(value, str) or not _WINDOW.match(value.strip()):
        raise ApiError(
            400,
            'completion_window must be a duration such as "24h" (or "90m", "48h", "2d")',
            param="completion_window",
            code="invalid_value",
        )
    return value.strip()


def query_int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in [low, high]; 400 naming it otherwise."""
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(
            400, f"{name} must be an integer from {low} to {high}", param=name, code="invalid_value"
        )
    return value


def _status(rec: dict[str, str], meta: dict[str, str]) -> str:
    if rec.get("failed_at"):
        return "failed"
    if not rec.get("batch"):
        return "validating"
    state = meta.get("state", "")
    final = bool(rec.get("final")) and rec.get("final") == meta.get("finished_at")
    if state == "cancelled":
        return "cancelled" if final else "cancelling"
    # A batch that finished before a cancel reached it stays what it became.
    if state in ("completed", "expired"):
        return state if final else "finalizing"
    return "cancelling" if rec.get("cancelling_at") else "in_progress"


def batch_object(rec: dict[str, str], meta: dict[str, str]) -> dict[str, Any]:
    """A Batch object (``openai.types.Batch``) from its record and its batchq batch's
    metadata (empty if there is none)."""
    status = _status(rec, meta)
    total = int(meta.get("total", 0))
    tokens_in = int(meta.get("tokens_in", 0))
    tokens_out = int(meta.get("tokens_out", 0))
    finished = seconds(meta.get("finished_at"))
    errors = json.loads(rec["errors"]) if rec.get("errors") else None
    return {
        "id": rec["id"],
        "object": "batch",
        "endpoint": rec.get("endpoint", ""),
        "errors": errors,
        "input_file_id": rec.get("input_file_id", ""),
        "completion_window": rec.get("completion_window", "24h"),
        "status": status,
        "output_file_id": rec.get("output_file_id"),
        "error_file_id": rec.get("error_file_id"),
        "created_at": seconds(rec.get("created_at")) or 0,
        "in_progress_at": seconds(rec.get("in_progress_at")),
        "expires_at": seconds(rec.get("expires_at")),
        "finalizing_at": seconds(rec.get("finalizing_at")),
        "completed_at": seconds(rec.get("completed_at")) if status == "completed" else None,
        "failed_at": seconds(rec.get("failed_at")),
        "expired_at": finished if status == "expired" else None,
        "cancelling_at": seconds(rec.get("cancelling_at") or meta.get("cancelled_at")),
        "cancelled_at": finished if status == "cancelled" else None,
        "request_counts": {
            "total": total,
            "completed": int(meta.get("succeeded", 0)),
            # Expired requests are in the error file too, as OpenAI counts them.
            "failed": int(meta.get("failed", 0)) + int(meta.get("expired", 0)),
        },
        "usage": {
            "input_tokens": tokens_in,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": tokens_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens_in + tokens_out,
        },
        "metadata": json.loads(rec["metadata"]) if rec.get("metadata") else None,
        "model": meta.get("model"),
        # batchq's extension (the client keeps unknown fields): the id for batchq's commands.
        "batchq_batch_id": rec.get("batch"),
    }


def sort_score(now_ms: int, seq: int) -> float:
    """The place in a list of what was made at ``now_ms``: the time, then the order of a
    counter among what shares its millisecond (a float holds both exactly for ages to come)."""
    return now_ms + (seq % 1000) / 1000
