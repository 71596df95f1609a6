"""Anthropic Message Batches requests mapped to native chat items."""

from __future__ import annotations

from typing import Any

import pytest

from batchq.inputs.anthropic import anthropic_item
from batchq.inputs.fields import Bad
from batchq.records import Endpoint


def _request(**params: Any) -> dict[str, Any]:
    base = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    return {"custom_id": "r-1", "params": base | params}


def test_params_map_to_ollama_chat() -> None:
    item = anthropic_item(
        _request(
            system=[{"type": "text", "text": "Be"}, {"type": "text", "text": "brief."}],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "a", "cache_control": {}}]},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"},
            ],
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            stop_sequences=["END"],
            metadata={"user_id": "u"},
        )
    )
    assert (item.custom_id, item.endpoint) == ("r-1", Endpoint.CHAT)
    assert item.body == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be\nbrief."},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
        "options": {
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 40,
            "stop": ["END"],
            "num_predict": 64,
        },
    }
    assert anthropic_item(_request(system="S")).body["messages"][0] == {
        "role": "system",
        "content": "S",
    }


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"params": {}}, "custom_id"),
        ({"custom_id": "x"}, "params"),
        ({"custom_id": "x" * 65, "params": {}}, "custom_id"),
        ({"custom_id": "x", "params": {}, "other": 1}, "other"),
        (_request(max_tokens=0), "params.max_tokens"),
        (_request(max_tokens=True), "params.max_tokens"),
        (_request(messages=[]), "params.messages"),
        (_request(messages=[{"role": "system", "content": "x"}]), "params.messages[0].role"),
        (_request(messages=[{"role": "user"}]), "params.messages[0].content"),
        (_request(system=[{"type": "image"}]), "params.system[0].type"),
        (_request(tools=[]), "params.tools"),
        (_request(stream=True), "params.stream"),
        (_request(temperature="hot"), "params.temperature"),
        (_request(stop_sequences=[""]), "params.stop_sequences[0]"),
    ],
)
def test_a_bad_request_names_its_field(request_: dict[str, Any], field: str) -> None:
    with pytest.raises(Bad) as err:
        anthropic_item(request_)
    assert err.value.field == field
