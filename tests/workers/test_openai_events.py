"""The body of an OpenAI-form completion hook: each event parsed by the ``openai`` package's
own webhook event types."""

from __future__ import annotations

import json

import pytest
from openai.types.webhooks import (
    BatchCancelledWebhookEvent,
    BatchCompletedWebhookEvent,
    BatchExpiredWebhookEvent,
    BatchFailedWebhookEvent,
)
from pydantic import BaseModel

from workers.openai_events import openai_event


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        ("completed", BatchCompletedWebhookEvent),
        ("expired", BatchExpiredWebhookEvent),
        ("cancelled", BatchCancelledWebhookEvent),
        ("failed", BatchFailedWebhookEvent),
    ],
)
def test_each_end_is_its_event(state: str, kind: type[BaseModel]) -> None:
    raw = openai_event("b_00:1700000000123", "batch_abc", state, "1700000000123")
    event = kind.model_validate(json.loads(raw))
    assert event.model_dump() == {
        "id": json.loads(raw)["id"],
        "object": "event",
        "type": f"batch.{state}",
        "created_at": 1700000000,
        "data": {"id": "batch_abc"},
    }


def test_the_event_id_is_the_deliverys() -> None:
    def event_id(msg_id: str) -> str:
        return str(json.loads(openai_event(msg_id, "batch_abc", "completed", "1"))["id"])

    # Every attempt of one announcement carries the same id; another finish, another id.
    assert event_id("b_00:1") == event_id("b_00:1") != event_id("b_00:2")
    assert event_id("b_00:1").startswith("evt_")


def test_a_state_no_event_announces_is_refused() -> None:
    with pytest.raises(ValueError, match="running"):
        openai_event("b_00:1", "batch_abc", "running", "1")
