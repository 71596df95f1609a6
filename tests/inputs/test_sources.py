"""Tests of batchq.inputs.sources: Python values meet exactly the checks a file's lines meet."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchq.errors import ConfigError, InputError
from batchq.inputs.native import iter_items
from batchq.inputs.sources import source_items
from batchq.records import Endpoint, Item

LINES: list[Any] = [
    "a bare prompt",
    {"custom_id": "g", "prompt": "gen", "system": "brief", "options": {"temperature": 0}},
    {"messages": [{"role": "user", "content": "hi"}], "model": "qwen3:8b", "think": True},
    {
        "custom_id": "oa",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt",
            "messages": [{"role": "developer", "content": "sys"}, {"role": "user", "content": "q"}],
            "max_tokens": 5,
            "response_format": {"type": "json_object"},
            "tools": [{"type": "function", "function": {"name": "f"}}],
        },
    },
    {
        "custom_id": "fim",
        "method": "POST",
        "url": "/v1/completions",
        "body": {"model": "coder", "prompt": "def f(", "suffix": "return x", "stop": "\n"},
    },
    {"prompt": "é ü 😀", "images": ["AAAA"], "format": {"type": "object"}, "keep_alive": "5m"},
]


def file_items(lines: list[Any], **kwargs: Any) -> list[Item]:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return list(iter_items(io.BytesIO(data), default_model="llama3.2", **kwargs))


def value_items(values: Any, **kwargs: Any) -> list[Item]:
    kwargs.setdefault("model", "llama3.2")
    with source_items(values, **kwargs) as items:
        return list(items)


def value_error(values: Any, **kwargs: Any) -> InputError:
    with pytest.raises(InputError) as info:
        value_items(values, **kwargs)
    return info.value


def test_values_give_the_items_their_lines_give() -> None:
    assert value_items(LINES) == file_items(LINES)


def test_items_go_round_through_their_native_lines() -> None:
    items = file_items(LINES)
    assert value_items(items) == items
    # Mixed with the values they came from, the custom ids now clash.
    err = value_error([*items, LINES[1]])
    assert (err.line, err.field) == (len(items) + 1, "custom_id")
    assert "duplicate custom_id 'g' (first on line 2)" in str(err)


def test_an_item_whose_body_is_not_for_its_endpoint() -> None:
    bad = Item("x", Endpoint.CHAT, {"model": "m", "prompt": "p"})
    err = value_error(["ok", bad])
    assert (err.line, err.field) == (2, "endpoint")
    assert "the Item says chat, but its body is for /api/generate" in str(err)


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ({"prompt": 3}, "prompt", "must be a string, got number"),
        ({"prompt": "p", "temperature": 1}, "temperature", "unknown field"),
        ({"messages": []}, "messages", "must not be empty"),
        (42, None, "expected a JSON object or string, got number"),
        (["a", "list"], None, "expected a JSON object or string, got array"),
        ({"prompt": "p", "options": {"t": math.nan}}, None, "not JSON: Out of range float"),
        ({"prompt": "p", "options": {"t": {1, 2}}}, None, "not JSON: Object of type set"),
        ({"prompt": "p", "images": [b"raw"]}, None, "not JSON: Object of type bytes"),
        ("lone \ud800 surrogate", None, "lone surrogate"),
        (Item("c", Endpoint.GENERATE, {"prompt": "p", "model": ""}), "model", "must not be empty"),
        ({"messages": [{"role": "user", "content": "c"}], "suffix": "s"}, "suffix", "prompt"),
    ],
)
def test_a_bad_value_is_named_by_line_and_field(value: Any, field: str, message: str) -> None:
    err = value_error(["fine", value])
    assert (err.line, err.field) == (2, field), str(err)
    assert message in str(err)
    assert str(err).startswith("line 2")


def test_values_nest_as_deeply_as_lines_may() -> None:
    def nested(levels: int) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for _ in range(levels - 1):
            value = {"k": value}
        return value

    assert value_items([{"prompt": "p", "options": nested(63)}])  # 64 with the line's own
    deep = "nested deeper than 64 levels of arrays and objects"
    err = value_error([{"prompt": "p", "options": nested(64)}])
    assert (err.line, err.field, err.reason) == (1, "options.k.k.k…", deep)
    # Too deep for json.dumps itself to encode: refused as well, not a RecursionError.
    err = value_error(["fine", {"prompt": "p", "options": nested(100_000)}])
    assert (err.line, err.field, err.reason) == (2, None, deep)


def test_no_model_and_no_items() -> None:
    err = value_error(["p"], model=None)
    assert (err.line, err.field) == (1, "model")
    assert value_error([]).reason == "the input has no items"


def test_a_long_value_is_bounded_like_a_long_line() -> None:
    err = value_error(["x" * 2000], max_line_bytes=1024)
    assert err.line == 1
    assert "longer than the limit of 1024 bytes" in str(err)
    assert len(value_items(["x" * 1000], max_line_bytes=1024)[0].body["prompt"]) == 1000


def test_values_are_read_lazily_and_stop_at_the_first_bad_one() -> None:
    taken: list[int] = []

    def values() -> Iterator[Any]:
        for i in range(1_000_000):
            taken.append(i)
            yield {"prompt": i} if i == 3 else f"prompt {i}"

    err = value_error(values())
    assert err.line == 4
    assert taken == [0, 1, 2, 3]


def test_paths_and_binary_streams(tmp_path: Path) -> None:
    txt = tmp_path / "prompts.txt"
    txt.write_text("one\n\ntwo\n")
    assert [i.body["prompt"] for i in value_items(txt)] == ["one", "two"]
    assert [i.body["prompt"] for i in value_items(str(txt))] == ["one", "two"]
    jsonl = tmp_path / "prompts.data"
    jsonl.write_text('"one"\n')
    assert value_items(jsonl)[0].body["prompt"] == "one"
    with jsonl.open("rb") as f:
        assert value_items(f)[0].body["prompt"] == "one"
    assert value_items(io.BytesIO(b"a line\n"), fmt="txt")[0].body["prompt"] == "a line"
    with pytest.raises(ConfigError, match="cannot read"):
        value_items(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        ({"prompt": "one item"}, TypeError, "not one dict: wrap a single item in a list"),
        (b'"bytes"\n', TypeError, "not one bytes"),
        (Item("0", Endpoint.GENERATE, {"model": "m", "prompt": "p"}), TypeError, "not one Item"),
        (io.StringIO('"text"\n'), TypeError, "binary mode"),
    ],
)
def test_sources_that_are_not_sources(source: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        value_items(source)


def test_format_is_for_files_only() -> None:
    with pytest.raises(ValueError, match="format applies to files and streams"):
        value_items(["p"], fmt="txt")
