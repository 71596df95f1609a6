"""The shapes of Anthropic's Message Batches API as ``batchq serve`` answers them: the error
body, the MessageBatch object (as the ``anthropic`` package's ``MessageBatch``) and list pages.

Times are RFC 3339 strings, as Anthropic's are, from the Redis server's clock.
"""

from __future__ import annotations

from typing import Any

from batchq import clock
from batchq.errors import BatchqError

__all__ = [
    "ANTHROPIC_PREFIX",
    "AnthropicError",
    "anthropic_error_body",
    "batch_page",
    "message_batch",
    "rfc3339",
]

# Where Anthropic's routes live in ``/v1``: these take ``x-api-key`` and answer errors in
# Anthropic's shape.
ANTHROPIC_PREFIX = "/v1/messages"


class AnthropicError(BatchqError):
    """A request the Message Batches API refuses: ``status`` and Anthropic's error body."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type

    def body(self) -> dict[str, Any]:
        return anthropic_error_body(self.message, self.type)


def anthropic_error_body(message: str, type: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type, "message": message}}


def rfc3339(ms: object) -> str | None:
    """Stored epoch ms as RFC 3339 UTC (``...Z``, as Anthropic writes them); None if unset."""
    moment = clock.iso(ms)
    return moment.replace("+00:00", "Z") if moment else None


def _processing_status(rec: dict[str, str], meta: dict[str, str]) -> str:
    if meta.get("finished_at") or not meta:
        return "ended"
    return "canceling" if rec.get("cancel_initiated_at") else "in_progress"


def message_batch(rec: dict[str, str], meta: dict[str, str], results_url: str) -> dict[str, Any]:
    """A MessageBatch object from its record and its batchq batch's metadata (empty if that
    batch was removed by hand: then it shows as ended, with nothing to count)."""
    status = _processing_status(rec, meta)
    total = int(meta.get("total", 0))
    succeeded = int(meta.get("succeeded", 0))
    errored = int(meta.get("failed", 0))
    canceled = int(meta.get("cancelled", 0))
    expired = int(meta.get("expired", 0))
    ended = status == "ended"
    return {
        "id": rec["id"],
        "type": "message_batch",
        "processing_status": status,
        # batchq counts as it goes (Anthropic's stay zero until the end); the sum is the total.
        "request_counts": {
            "processing": max(0, total - succeeded - errored - canceled - expired),
            "succeeded": succeeded,
            "errored": errored,
            "canceled": canceled,
            "expired": expired,
        },
        "created_at": rfc3339(rec.get("created_at")),
        "ended_at": rfc3339(meta.get("finished_at") or rec.get("created_at")) if ended else None,
        "expires_at": rfc3339(rec.get("expires_at")),
        "cancel_initiated_at": rfc3339(rec.get("cancel_initiated_at")),
        "archived_at": None,
        "results_url": results_url if ended else None,
        # batchq's extension (the client keeps unknown fields): the id for batchq's commands.
        "batchq_batch_id": rec.get("batch"),
    }


def batch_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """A page as Anthropic's list endpoints answer (the client pages on with ``after_id`` the
    last id, or ``before_id`` the first)."""
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
