"""The body of a completion hook in OpenAI's form: the ``batch.*`` webhook event of a batch
made through ``batchq serve``'s ``/v1/batches`` (:mod:`batchq.api.webhooks` says when it is
sent), as the ``openai`` package's ``openai.types.webhooks`` events have it::

    {"id": "evt_...", "object": "event", "type": "batch.completed", "created_at": <s>,
     "data": {"id": "batch_..."}}

The event's id is derived from the delivery's (the batch and its finish), so every attempt of
one announcement carries the same one and a receiver can drop repeats by it.
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["EVENT_TYPES", "openai_event"]

# The batchq state a finished API batch is in -> the event announcing it.
EVENT_TYPES = {
    "completed": "batch.completed",
    "expired": "batch.expired",
    "cancelled": "batch.cancelled",
    "failed": "batch.failed",  # refused at validation: see batchq.api.webhooks
}


def openai_event(msg_id: str, api_batch_id: str, state: str, finished_ms: str) -> bytes:
    """The event's exact bytes (the signature is over them); ValueError for a state that no
    event announces."""
    if state not in EVENT_TYPES:
        raise ValueError(f"no OpenAI event announces a batch that is {state!r:.40}")
    event = {
        "id": "evt_" + hashlib.sha256(msg_id.encode()).hexdigest()[:32],
        "object": "event",
        "type": EVENT_TYPES[state],
        "created_at": int(finished_ms) // 1000,
        "data": {"id": api_batch_id},
    }
    return json.dumps(event, separators=(",", ":")).encode()
