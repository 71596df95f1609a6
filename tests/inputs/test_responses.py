"""Tests of batchq.inputs.responses: Responses API bodies of ``/v1/responses`` batch lines
translated to Ollama chat requests, and every rejection naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import CHAT, fail_line, one


def _line(body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": "r1", "method": "POST", "url": "/v1/responses", "body": body}


def test_a_string_input_is_one_user_message() -> None:
    item = one(_line({"model": "gpt", "input": "hi"}))
    assert (item.endpoint, item.url) == (CHAT, "/v1/responses")
    assert item.body == {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}


def test_instructions_items_and_options_map_to_chat() -> None:
    body = {
        "model": "gpt",
        "instructions": "be brief",
        "input": [
            {"role": "developer", "content": "house rules"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "one"},
                    {"type": "input_text", "text": "two"},
                ],
            },
            {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        ],
        "max_output_tokens": 16,
        "temperature": 0.5,
        "top_p": 0.9,
        "store": False,
    }
    assert one(_line(body)).body == {
        "model": "gpt",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "system", "content": "house rules"},
            {"role": "user", "content": "one\ntwo"},
            {"role": "assistant", "content": "ok"},
        ],
        "options": {"num_predict": 16, "temperature": 0.5, "top_p": 0.9},
    }


@pytest.mark.parametrize(
    ("body", "field", "match"),
    [
        ({"model": "gpt"}, "body.input", "required"),
        ({"model": "gpt", "input": []}, "body.input", "empty"),
        ({"model": "gpt", "input": 3}, "body.input", "array"),
        ({"model": "gpt", "input": "x", "tools": []}, "body.tools", "not supported"),
        ({"model": "gpt", "input": [{"role": "boss", "content": "x"}]}, "body.input[0].role", ""),
        (
            {"model": "gpt", "input": [{"type": "function_call", "role": "user"}]},
            "body.input[0].type",
            "message",
        ),
        (
            {"model": "gpt", "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "body.input[0].content[0].type",
            "input_text",
        ),
        ({"model": "gpt", "input": "x", "max_output_tokens": 0}, "body.max_output_tokens", ""),
        ({"model": "gpt", "input": "x", "temperature": "hot"}, "body.temperature", "number"),
        ({"model": "gpt", "input": "x", "instructions": 1}, "body.instructions", "string"),
    ],
)
def test_bad_bodies_name_their_field(body: dict[str, Any], field: str, match: str) -> None:
    fail_line(_line(body), field, match=match)
