"""Tests of batchq.inputs.openai: OpenAI batch request lines translated to native requests,
and every rejection naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from batchq.records import Item
from tests.helpers import CHAT, GEN, USER, chat_line, completion_line, fail_line, one


def test_openai_chat_minimal() -> None:
    assert one(chat_line({})) == Item("r1", CHAT, {"model": "gpt", "messages": [USER]})


def test_openai_completion_minimal() -> None:
    assert one(completion_line({"suffix": "end"})) == Item(
        "r1", GEN, {"model": "gpt", "prompt": "Once", "suffix": "end"}
    )


def test_openai_default_model_fills_in() -> None:
    line = chat_line({})
    del line["body"]["model"]
    assert one(line, default_model="dm").model == "dm"
    fail_line(line, "body.model", match="no model", default_model=None)


def test_openai_method_may_be_left_out() -> None:
    line = chat_line({})
    del line["method"]
    assert one(line).endpoint is CHAT


@pytest.mark.parametrize(
    ("body", "options"),
    [
        ({"max_tokens": 10}, {"num_predict": 10}),
        ({"max_completion_tokens": 20}, {"num_predict": 20}),
        ({"max_tokens": 10, "max_completion_tokens": 20}, {"num_predict": 20}),
        ({"temperature": 0.5, "top_p": 1}, {"temperature": 0.5, "top_p": 1}),
        ({"seed": 42}, {"seed": 42}),
        (
            {"frequency_penalty": 0.1, "presence_penalty": -0.2},
            {"frequency_penalty": 0.1, "presence_penalty": -0.2},
        ),
        ({"stop": "END"}, {"stop": ["END"]}),
        ({"stop": ["a", "b"]}, {"stop": ["a", "b"]}),
        ({"temperature": None, "stop": None, "max_tokens": None}, None),
    ],
)
def test_openai_options(body: dict[str, Any], options: dict[str, Any] | None) -> None:
    for line in (chat_line(body), completion_line(body)):
        assert one(line).body.get("options") == options


@pytest.mark.parametrize(
    ("response_format", "fmt"),
    [
        ({"type": "json_object"}, "json"),
        (
            {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
            {"type": "object"},
        ),
        ({"type": "text"}, None),
        (None, None),
    ],
)
def test_openai_response_format(response_format: Any, fmt: Any) -> None:
    assert one(chat_line({"response_format": response_format})).body.get("format") == fmt


def test_openai_ignored_fields() -> None:
    body = {
        "n": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u",
        "logprobs": True,
        "top_logprobs": 2,
        "metadata": {"k": "v"},
    }
    assert one(chat_line(body)).body == {"model": "gpt", "messages": [USER]}
    assert "stream" not in one(completion_line(body)).body


def test_openai_tools_pass_through() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert one(chat_line({"tools": tools})).body["tools"] == tools


def test_openai_content_parts() -> None:
    content = [
        {"type": "text", "text": "first"},
        {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "low"},
        },
        {"type": "text", "text": "second"},
        {"type": "image_url", "image_url": "data:image/jpeg;base64,/9j/4AAQ"},
    ]
    line = chat_line(
        {
            "messages": [
                {"role": "developer", "content": "sys"},
                {"role": "user", "content": content, "name": "bob"},
            ]
        }
    )
    assert one(line).body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first\nsecond", "images": ["iVBORw0K", "/9j/4AAQ"]},
    ]


def test_openai_tool_calls_become_ollama_tool_calls() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
    }
    messages = [
        USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "3"},
        {"role": "tool", "tool_call_id": "unknown", "content": "?"},
    ]
    assert one(chat_line({"messages": messages})).body["messages"] == [
        USER,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}],
        },
        {"role": "tool", "content": "3", "tool_name": "add"},
        {"role": "tool", "content": "?"},
    ]


B = "body"


@pytest.mark.parametrize(
    ("line", "field", "match"),
    [
        ({**chat_line({}), "custom_id": None}, "custom_id", "must be a string"),
        ({**chat_line({}), "custom_id": 3}, "custom_id", "must be a string"),
        ({k: v for k, v in chat_line({}).items() if k != "custom_id"}, "custom_id", "required"),
        ({**chat_line({}), "method": "GET"}, "method", "POST"),
        ({**chat_line({}), "url": "/v1/files"}, "url", "/v1/completions, /v1/embeddings"),
        ({**chat_line({}), "url": "/api/chat"}, "url", "unsupported url"),
        ({"custom_id": "a", "method": "POST"}, "url", "unsupported url None"),
        ({"custom_id": "a", "url": "/v1/completions"}, "body", "required"),
        ({**chat_line({}), "body": []}, "body", "must be an object, got array"),
        ({**chat_line({}), "extra": 1}, "extra", "unknown field"),
        (chat_line({"n": 2}), "body.n", "only n=1 is supported"),
        (chat_line({"n": True}), "body.n", "only n=1"),
        (chat_line({"logit_bias": {}}), "body.logit_bias", "not supported"),
        (chat_line({"prompt": "x"}), "body.prompt", "not supported"),
        (completion_line({"tools": []}), "body.tools", "not supported"),
        (completion_line({"messages": []}), "body.messages", "not supported"),
        (completion_line({"prompt": ["a", "b"]}), "body.prompt", "must be a string"),
        ({**completion_line({}), "url": "/v1/embeddings"}, "body.prompt", "not supported"),
        (completion_line({"suffix": 1}), "body.suffix", "string"),
        ({**completion_line({}), B: {"model": "m"}}, "body.prompt", "required"),
        ({**chat_line({}), B: {"model": "m"}}, "body.messages", "required"),
        (chat_line({"model": 5}), "body.model", "must be a string"),
        (chat_line({"max_tokens": 1.5}), "body.max_tokens", "integer"),
        (chat_line({"max_completion_tokens": "9"}), "body.max_completion_tokens", "integer"),
        (chat_line({"seed": False}), "body.seed", "integer"),
        (chat_line({"temperature": "hot"}), "body.temperature", "number"),
        (chat_line({"top_p": True}), "body.top_p", "number"),
        (chat_line({"frequency_penalty": []}), "body.frequency_penalty", "number"),
        (chat_line({"presence_penalty": {}}), "body.presence_penalty", "number"),
        (chat_line({"stop": [1]}), "body.stop[0]", "string"),
        (chat_line({"stop": 1}), "body.stop", "array"),
        (chat_line({"response_format": "json"}), "body.response_format", "object"),
        (chat_line({"response_format": {"type": "xml"}}), "body.response_format.type", "json_"),
        (
            chat_line({"response_format": {"type": "json_schema"}}),
            "body.response_format.json_schema",
            "object",
        ),
        (
            chat_line({"response_format": {"type": "json_schema", "json_schema": {}}}),
            "body.response_format.json_schema.schema",
            "object",
        ),
        (chat_line({"tools": {}}), "body.tools", "array"),
    ],
)
def test_openai_rejections(line: dict[str, Any], field: str, match: str) -> None:
    fail_line(line, field, match=match)


@pytest.mark.parametrize(
    ("messages", "field", "match"),
    [
        ([], "body.messages", "must not be empty"),
        ({"role": "user"}, "body.messages", "array"),
        ([USER, 1], "body.messages[1]", "object"),
        ([{"role": "function", "content": "x"}], "body.messages[0].role", "one of"),
        ([{"role": "user", "content": 1}], "body.messages[0].content", "got number"),
        ([{"role": "user"}], "body.messages[0].content", "got null"),
        ([{"role": "assistant", "content": None}], "body.messages[0].content", "got null"),
        ([{"role": "user", "content": "x", "audio": {}}], "body.messages[0].audio", "unknown"),
        (
            [{"role": "user", "content": [{"type": "text"}]}],
            "body.messages[0].content[0].text",
            "string",
        ),
        ([{"role": "user", "content": ["plain"]}], "body.messages[0].content[0]", "object"),
        (
            [{"role": "user", "content": [{"type": "input_audio"}]}],
            "body.messages[0].content[0].type",
            "unsupported content part",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "a"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    ],
                }
            ],
            "body.messages[0].content[1].image_url.url",
            "data: URLs",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": "data:image/png,abc"}],
                }
            ],
            "body.messages[0].content[0].image_url",
            "base64",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            "body.messages[0].content[0].image_url.url",
            "string",
        ),
        (
            [{"role": "user", "content": "x", "tool_calls": []}],
            "body.messages[0].tool_calls",
            "only assistant",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}]}],
            "body.messages[0].tool_calls[0].function.arguments",
            "JSON object",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[]"}}]}],
            "body.messages[0].tool_calls[0].function.arguments",
            "object",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}],
            "body.messages[0].tool_calls[0].function.name",
            "string",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"id": "c"}]}],
            "body.messages[0].tool_calls[0].function",
            "object",
        ),
    ],
)
def test_openai_message_rejections(messages: Any, field: str, match: str) -> None:
    fail_line(chat_line({"messages": messages}), field, match=match)
