"""Embeddings lines (native ``input`` lines and OpenAI ``/v1/embeddings`` lines) as parsed by
:func:`batchq.inputs.native.iter_items`, and a bad one stopping ``batchq submit``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchq.records import Endpoint, Item
from tests.helpers import fail_line, one
from tests.procs import batchq, env_for

EMBED = Endpoint.EMBED


def embeddings_line(body: dict[str, Any]) -> dict[str, Any]:
    full = {"model": "nomic-embed-text", "input": "hello", **body}
    return {"custom_id": "e1", "method": "POST", "url": "/v1/embeddings", "body": full}


def test_native_input_lines() -> None:
    assert one({"input": "hello"}) == Item("0", EMBED, {"model": "m", "input": ["hello"]})
    line = {
        "custom_id": "v",
        "model": "nomic-embed-text",
        "input": ["a", "b"],
        "truncate": False,
        "dimensions": 256,
        "keep_alive": "1m",
        "options": {"num_ctx": 2048},
        "stream": False,
    }
    body = {k: v for k, v in line.items() if k not in ("custom_id", "stream")}
    assert one(line) == Item("v", EMBED, body)


def test_openai_embeddings_lines() -> None:
    assert one(embeddings_line({})) == Item(
        "e1", EMBED, {"model": "nomic-embed-text", "input": ["hello"]}
    )
    line = embeddings_line(
        {"input": ["a", "b"], "dimensions": 8, "encoding_format": "float", "user": "u"}
    )
    del line["body"]["model"]
    assert one(line, default_model="mxbai") == Item(
        "e1", EMBED, {"model": "mxbai", "input": ["a", "b"], "dimensions": 8}
    )


@pytest.mark.parametrize(
    ("line", "field", "match"),
    [
        ({"custom_id": "x"}, None, "or input (embeddings)"),
        ({"input": "a", "prompt": "b"}, None, "not both prompt and input"),
        ({"input": "a", "messages": []}, None, "not both messages and input"),
        ({"input": None}, "input", "must be a string or an array of strings, got null"),
        ({"input": {"text": "a"}}, "input", "got object"),
        ({"input": ""}, "input", "must not be empty"),
        ({"input": []}, "input", "must not be empty"),
        ({"input": ["a", ""]}, "input[1]", "must not be empty"),
        ({"input": ["a", 3]}, "input[1]", "token arrays are not supported"),
        ({"input": [[1, 2]]}, "input[0]", "token arrays are not supported"),
        ({"input": ["a", None]}, "input[1]", "must be a string, got null"),
        ({"input": ["a", True]}, "input[1]", "must be a string, got boolean"),
        ({"input": "a", "system": "s"}, "system", "not supported with input"),
        ({"input": "a", "format": "json"}, "format", "not supported with input"),
        ({"input": "a", "think": True}, "think", "not supported with input"),
        ({"input": "a", "truncate": "no"}, "truncate", "true or false"),
        ({"input": "a", "dimensions": 0}, "dimensions", "at least 1"),
        ({"input": "a", "dimensions": 2.5}, "dimensions", "integer"),
        ({"input": "a", "keep_alive": []}, "keep_alive", "duration"),
        ({"input": "a", "options": 1}, "options", "object"),
        ({"input": "a", "model": ""}, "model", "must not be empty"),
        ({"input": "a", "turncate": True}, "turncate", "unknown field"),
    ],
)
def test_native_input_rejections(line: dict[str, Any], field: str | None, match: str) -> None:
    fail_line(line, field, match=match)


@pytest.mark.parametrize(
    ("body", "field", "match"),
    [
        ({"input": None}, "body.input", "got null"),
        ({"input": ""}, "body.input", "must not be empty"),
        ({"input": []}, "body.input", "must not be empty"),
        ({"input": ["ok", ""]}, "body.input[1]", "must not be empty"),
        ({"input": [1, 2, 3]}, "body.input[0]", "token arrays are not supported"),
        ({"input": ["ok", 5]}, "body.input[1]", "token arrays"),
        ({"model": 5}, "body.model", "must be a string"),
        ({"dimensions": -1}, "body.dimensions", "at least 1"),
        ({"encoding_format": "base64"}, "body.encoding_format", '"float"'),
        ({"messages": []}, "body.messages", "not supported for /v1/embeddings"),
    ],
)
def test_openai_embeddings_rejections(body: dict[str, Any], field: str, match: str) -> None:
    fail_line(embeddings_line(body), field, match=match)


def test_openai_embeddings_line_needs_input() -> None:
    line = embeddings_line({})
    del line["body"]["input"]
    fail_line(line, "body.input", match="required for /v1/embeddings")


def test_a_bad_embeddings_line_stops_submit_and_nothing_is_queued(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    env = env_for(redis_url, prefix, tmp_path / "home", "http://127.0.0.1:9")
    src = tmp_path / "in.jsonl"
    good = embeddings_line({})
    bad = embeddings_line({"input": ["fine", ""]}) | {"custom_id": "e2"}
    src.write_text("".join(json.dumps(x) + "\n" for x in [good, {"input": "x"}, bad, good]))
    proc = batchq(env, "submit", str(src), "--model", "m", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "batchq: error: line 3, field 'body.input[1]': must not be empty"
    )
    assert json.loads(batchq(env, "list", "--json").stdout) == []
