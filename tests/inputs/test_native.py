"""Tests of batchq.inputs.native: every accepted line shape, every rejection, and the
streaming bounds."""

from __future__ import annotations

import io
import json
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchq.errors import InputError
from batchq.inputs.native import MAX_CUSTOM_ID_BYTES, detect_format, iter_items
from batchq.records import MAX_JSON_DEPTH, Endpoint, Item
from tests.helpers import (
    CHAT,
    GEN,
    USER,
    as_bytes,
    chat_line,
    completion_line,
    fail,
    fail_line,
    one,
    parse,
)

# --- format detection and the txt format -----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("a.txt", "txt"),
        ("dir/B.TXT", "txt"),
        ("a.jsonl", "jsonl"),
        ("a.json", "jsonl"),
        ("-", "jsonl"),
        ("txt", "jsonl"),
    ],
)
def test_detect_format(path: str, fmt: str) -> None:
    assert detect_format(path) == fmt


def test_txt_lines_are_prompts() -> None:
    data = b"\xef\xbb\xbfhello\r\n\n   \n  two  spaces \tinside  \nlast"
    items = parse(data, fmt="txt", default_model="m")
    assert items == [
        Item("0", GEN, {"model": "m", "prompt": "hello"}),
        Item("1", GEN, {"model": "m", "prompt": "  two  spaces \tinside  "}),
        Item("2", GEN, {"model": "m", "prompt": "last"}),
    ]


def test_txt_lines_that_look_like_json_stay_text() -> None:
    assert one('{"prompt": "x"}', fmt="txt").body["prompt"] == '{"prompt": "x"}'


def test_txt_needs_a_model() -> None:
    err = fail(b"\n\nhello\n", fmt="txt")
    assert (err.line, err.field) == (3, "model")
    assert "no model" in err.reason


# --- reading lines --------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\n", b"  \n\t\n\r\n", b"\xef\xbb\xbf\n  "])
@pytest.mark.parametrize("fmt", ["jsonl", "txt"])
def test_empty_input(data: bytes, fmt: Any) -> None:
    err = fail(data, fmt=fmt, default_model="m")
    assert (err.line, err.field, err.reason) == (None, None, "the input has no items")


def test_blank_lines_take_no_index_but_count_as_lines() -> None:
    data = '\n"a"\n   \n\r\n{"prompt": "b"}\n\n[1]\n'
    it = iter_items(io.BytesIO(data.encode()), default_model="m")
    assert [(i.custom_id, i.body["prompt"]) for i in (next(it), next(it))] == [
        ("0", "a"),
        ("1", "b"),
    ]
    with pytest.raises(InputError) as info:
        next(it)
    assert info.value.line == 7


def test_crlf_and_bom_and_whitespace_around_json() -> None:
    data = b'\xef\xbb\xbf{"prompt": "a"}\r\n  {"prompt": "b"}  \r\n\t"c"\t'
    assert [i.body["prompt"] for i in parse(data, default_model="m")] == ["a", "b", "c"]


def test_bom_only_tolerated_on_line_one() -> None:
    err = fail(b'"a"\n\xef\xbb\xbf"b"\n', default_model="m")
    assert err.line == 2 and "invalid JSON" in err.reason


def test_invalid_utf8_names_the_line() -> None:
    err = fail(b'"a"\n"b"\n"\xff\xfe"\n', default_model="m")
    assert (err.line, err.field) == (3, None)
    assert "not valid UTF-8" in err.reason


@pytest.mark.parametrize("fmt", ["jsonl", "txt"])
def test_line_over_the_limit(fmt: Any) -> None:
    data = b'"ok"\n"' + b"x" * 100 + b'"\n"never read"\n'
    err = fail(data, fmt=fmt, default_model="m", max_line_bytes=50)
    assert (err.line, err.field) == (2, None)
    assert err.reason == "line is longer than the limit of 50 bytes"


@pytest.mark.parametrize("end", [b"", b"\n", b"\r\n"])
def test_line_exactly_at_the_limit(end: bytes) -> None:
    line = b'"' + b"x" * 8 + b'"'
    items = parse(line + b"\r\n" + line + end, default_model="m", max_line_bytes=10)
    assert [i.body["prompt"] for i in items] == ["x" * 8] * 2
    err = fail(b'"' + b"x" * 9 + b'"' + end, default_model="m", max_line_bytes=10)
    assert err.line == 1 and "longer than the limit" in err.reason


class _SpyStream(io.BytesIO):
    """Records every read, to show that lines are read one bounded piece at a time."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int] = []

    def readline(self, size: int | None = -1) -> bytes:
        assert size is not None and size > 0, "unbounded readline"
        self.sizes.append(size)
        return super().readline(size)

    def read(self, size: int | None = -1) -> bytes:
        raise AssertionError("iter_items must read line by line")


def test_reads_lazily_and_bounded() -> None:
    stream = _SpyStream(b'"a"\n' * 1000)
    items = iter_items(stream, default_model="m", max_line_bytes=100)
    next(items)
    assert stream.tell() == 4  # one line read, not the file
    assert stream.sizes == [102]  # the limit plus room for "\r\n"


def test_items_before_a_bad_line_are_yielded() -> None:
    it = iter_items(io.BytesIO(b'"a"\n"b"\nnope\n"c"\n'), default_model="m")
    assert [next(it).custom_id, next(it).custom_id] == ["0", "1"]
    with pytest.raises(InputError) as info:
        next(it)
    assert info.value.line == 3


# --- JSON lines: shapes ---------------------------------------------------------------------


def test_json_string_is_a_prompt() -> None:
    assert one('"héllo ☃"') == Item("0", GEN, {"model": "m", "prompt": "héllo ☃"})


def test_native_generate_with_every_field() -> None:
    line = {
        "custom_id": "a-1",
        "model": "llama3.2",
        "prompt": "Why is the sky blue?",
        "system": "be brief",
        "images": ["aGVsbG8="],
        "format": "json",
        "options": {"temperature": 0.1, "num_ctx": 4096},
        "keep_alive": "10m",
        "think": "high",
        "stream": False,
        "suffix": "Yours truly",
    }
    assert one(line) == Item(
        "a-1",
        GEN,
        {
            "model": "llama3.2",
            "prompt": "Why is the sky blue?",
            "system": "be brief",
            "images": ["aGVsbG8="],
            "suffix": "Yours truly",
            "format": "json",
            "options": {"temperature": 0.1, "num_ctx": 4096},
            "keep_alive": "10m",
            "think": "high",
        },
    )


def test_native_chat_with_every_field() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    tool = {"type": "function", "function": {"name": "f", "parameters": {}}}
    call = {"function": {"name": "f", "arguments": {"x": 1}}}
    messages = [
        {"role": "user", "content": "hi", "images": ["aW1n"]},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "assistant", "content": None, "tool_calls": [call], "thinking": "hmm"},
        {"role": "tool", "content": "42", "tool_name": "f"},
    ]
    line = {
        "messages": messages,
        "system": "sys",
        "tools": [tool],
        "format": schema,
        "keep_alive": -1,
        "think": False,
        "options": {},
    }
    item = one(line, default_model="dm")
    assert item == Item(
        "0",
        CHAT,
        {
            "model": "dm",
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "hi", "images": ["aW1n"]},
                {"role": "assistant", "tool_calls": [call], "content": ""},
                {"role": "assistant", "content": "", "tool_calls": [call], "thinking": "hmm"},
                {"role": "tool", "content": "42", "tool_name": "f"},
            ],
            "tools": [tool],
            "format": schema,
            "keep_alive": -1,
            "think": False,
        },
    )
    assert "options" not in item.body and "stream" not in item.body


def test_custom_ids() -> None:
    items = parse(
        [
            {"prompt": "a"},
            {"prompt": "b", "custom_id": 7},
            '"c"',
            {"prompt": "d", "custom_id": "x"},
        ],
        default_model="m",
    )
    assert [i.custom_id for i in items] == ["0", "7", "2", "x"]


def test_line_model_wins_over_default() -> None:
    assert one({"prompt": "p", "model": "own"}, default_model="dm").model == "own"
    assert one({"prompt": "p"}, default_model="dm").model == "dm"


def test_items_round_trip_through_their_stored_form() -> None:
    item = one({"messages": [{"role": "user", "content": "\U0001f600 \\ud83d"}]})
    assert Item.loads(item.dumps().encode()) == item


def test_escaped_surrogate_pairs_are_fine() -> None:
    assert one('"\\ud83d\\ude00"').body["prompt"] == "\U0001f600"


# --- JSON lines: rejections -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("[1, 2]", "array"),
        ("3", "number"),
        ("-1.5", "number"),
        ("true", "boolean"),
        ("null", "null"),
        ("[]", "array"),
    ],
)
def test_non_object_lines(line: str, kind: str) -> None:
    fail_line(line, None, match=f"expected a JSON object or string, got {kind}")


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"prompt": "a"', "column"),
        ("{'prompt': 'a'}", "property name"),
        ('"a" "b"', "Extra data"),
        ("nope", "Expecting value"),
        ('{"prompt": NaN}', "NaN"),
        ('{"prompt": 1e999}', "range"),
        ('["a", -Infinity]', "Infinity"),
        ('{"prompt": "a\x01"}', "control character"),
        ('{"prompt": 1' + "0" * 5000 + "}", "invalid JSON"),
    ],
)
def test_malformed_json(line: str, match: str) -> None:
    err = fail_line(line, None, match=match)
    assert err.reason.startswith("invalid JSON")


def nested(levels: int, leaf: object = 1) -> object:
    """``levels`` objects and arrays, alternating from an object outside, around ``leaf``."""
    value = leaf
    for n in range(levels):
        value = {"k": value} if (levels - n) % 2 else [value]
    return value


def nested_text(levels: int) -> str:
    """:func:`nested` as JSON text, written without recursion."""
    opens = ['{"k":' if (levels - n) % 2 else "[" for n in reversed(range(levels))]
    return (
        "".join(opens) + "1" + "".join("}" if o.startswith("{") else "]" for o in reversed(opens))
    )


DEEP = "nested deeper than 64 levels of arrays and objects"


@pytest.mark.parametrize(
    ("field", "line"),
    [
        ("format", lambda v: {"prompt": "p", "format": v}),
        ("options", lambda v: {"prompt": "p", "options": v}),
        ("tools[0]", lambda v: {"messages": [USER], "tools": [v]}),
        (
            "body.response_format.json_schema.schema",
            lambda v: completion_line(
                {"response_format": {"type": "json_schema", "json_schema": {"schema": v}}}
            ),
        ),
    ],
)
def test_a_line_nests_at_most_64_levels_and_the_worker_decodes_all_it_may(
    field: str, line: Any
) -> None:
    # Levels of the line above the value: 1 for a native field, 2 in an OpenAI body; one more
    # for the list around each tool.
    above = 1 + field.count(".") + field.count("[")
    deepest = line(nested(MAX_JSON_DEPTH - above))
    item = one(deepest)
    assert Item.loads(item.dumps(), checked=True) == item  # what submit accepts, a worker decodes
    for levels in (MAX_JSON_DEPTH - above + 1, 975):  # 975: the line of the issue
        # As text: the test's own stack is too deep to encode 975 levels.
        text = json.dumps(line("DEEP")).replace('"DEEP"', nested_text(levels))
        # On a thread of its own, as submit parses: the decoder has the whole stack.
        with ThreadPoolExecutor(1) as pool:
            err = pool.submit(fail, text + "\n", default_model="m").result()
        assert (err.line, err.reason) == (1, DEEP)
        assert err.field is not None and err.field.startswith(field) and err.field.endswith("…")


def test_nesting_too_deep_for_the_decoder_or_hidden_in_a_string_is_refused_too() -> None:
    err = fail_line("[" * 100_000, None, match=DEEP)
    assert err.reason == DEEP

    # OpenAI sends tool-call arguments as a string of JSON, which becomes part of the request.
    def call(arguments: object) -> dict[str, Any]:
        msg = {
            "role": "assistant",
            "tool_calls": [{"function": {"name": "f", "arguments": arguments}}],
        }
        return chat_line({"messages": [msg]})

    # body, messages, the message, tool_calls, the call, function: the arguments are level 7.
    item = one(call(json.dumps(nested(MAX_JSON_DEPTH - 6))))
    assert Item.loads(item.dumps(), checked=True) == item
    fail_line(
        call(json.dumps(nested(MAX_JSON_DEPTH - 5))), "body.messages[0].tool_calls[0]…", match=DEEP
    )
    small = {"custom_id": "x", "prompt": "[[[[" * 100}  # brackets in a string are text
    assert one(small).body["prompt"] == small["prompt"]


def test_malformed_json_reports_decoder_message_and_column() -> None:
    err = fail(['"ok"', '{"prompt": "a",}'], default_model="m")
    assert err.line == 2
    assert (
        err.reason == "invalid JSON: Expecting property name enclosed in double quotes (column 16)"
    )


def test_lone_surrogate_escape() -> None:
    fail_line('"\\ud800"', None, match="surrogate")
    fail_line({"custom_id": "\ud800x", "prompt": "p"}, None, match="surrogate")
    call = {"function": {"name": "f", "arguments": json.dumps({"a": "\udc00"})}}
    line = chat_line({"messages": [{"role": "assistant", "tool_calls": [call]}]})
    fail_line(line, None, match="surrogate")


def test_json_error_column_ignores_the_line_terminator() -> None:
    for end in ("\n", "\r\n", ""):
        err = fail('{"prompt": ' + end, default_model="m")
        assert err.reason == "invalid JSON: Expecting value (column 12)"


@pytest.mark.parametrize(
    ("line", "field", "match"),
    [
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, None, "not both"),
        ({"system": "s"}, None, "needs a prompt"),
        ({"prompt": "a", "temperature": 1}, "temperature", "unknown field"),
        ({"prompt": 1}, "prompt", "must be a string"),
        ({"prompt": "a", "custom_id": True}, "custom_id", "must be a string"),
        ({"prompt": "a", "custom_id": 1.5}, "custom_id", "must be a string"),
        ({"prompt": "a", "custom_id": ""}, "custom_id", "must not be empty"),
        ({"prompt": "a", "model": ""}, "model", "must not be empty"),
        ({"prompt": "a", "model": None}, "model", "must be a string, got null"),
        ({"prompt": "a", "system": 1}, "system", "must be a string"),
        ({"prompt": "a", "options": []}, "options", "must be an object, got array"),
        ({"prompt": "a", "format": "yaml"}, "format", "JSON schema"),
        ({"prompt": "a", "format": ["json"]}, "format", "JSON schema"),
        ({"prompt": "a", "keep_alive": True}, "keep_alive", "duration"),
        ({"prompt": "a", "think": "max"}, "think", '"low"'),
        ({"prompt": "a", "think": 1}, "think", '"low"'),
        ({"prompt": "a", "images": "aW1n"}, "images", "must be an array"),
        ({"prompt": "a", "images": ["ok", 3]}, "images[1]", "must be a string"),
        ({"prompt": "a", "tools": []}, "tools", "need messages"),
        ({"messages": [{"role": "user", "content": "a"}], "images": []}, "images", "in a message"),
        ({"messages": [{"role": "user", "content": "a"}], "tools": {}}, "tools", "array"),
        ({"messages": [{"role": "user", "content": "a"}], "tools": [1]}, "tools[0]", "object"),
        ({"messages": [{"role": "user", "content": "a"}], "suffix": "s"}, "suffix", "a prompt"),
        ({"prompt": "a", "suffix": 1}, "suffix", "must be a string"),
    ],
)
def test_native_rejections(line: dict[str, Any], field: str | None, match: str) -> None:
    fail_line(line, field, match=match)


@pytest.mark.parametrize(
    ("messages", "field", "match"),
    [
        ("hi", "messages", "must be an array, got string"),
        ([], "messages", "must not be empty"),
        ([USER, "hi"], "messages[1]", "must be an object, got string"),
        ([USER, USER, {"role": "robot", "content": "x"}], "messages[2].role", "one of"),
        ([{"role": ["user"], "content": "x"}], "messages[0].role", "one of"),
        ([{"content": "x"}], "messages[0].role", "one of"),
        ([{"role": "user"}], "messages[0].content", "got null"),
        ([{"role": "user", "content": ["x"]}], "messages[0].content", "got array"),
        ([{"role": "assistant", "content": None}], "messages[0].content", "got null"),
        ([{"role": "assistant", "tool_calls": []}], "messages[0].content", "got null"),
        ([{"role": "assistant", "tool_calls": "f"}], "messages[0].tool_calls", "array"),
        ([{"role": "assistant", "tool_calls": [2]}], "messages[0].tool_calls[0]", "object"),
        ([{"role": "user", "content": "x", "name": "n"}], "messages[0].name", "unknown field"),
        ([{"role": "user", "content": "x", "images": [1]}], "messages[0].images[0]", "string"),
        ([{"role": "tool", "content": "x", "tool_name": 1}], "messages[0].tool_name", "string"),
        ([{"role": "assistant", "content": "x", "thinking": 1}], "messages[0].thinking", "string"),
    ],
)
def test_native_message_rejections(messages: Any, field: str, match: str) -> None:
    fail_line({"messages": messages}, field, match=match)


def test_missing_model() -> None:
    for line in ['"p"', {"prompt": "p"}, {"messages": [USER]}]:
        err = fail([line])
        assert (err.line, err.field) == (1, "model")
        assert err.reason == "no model: give the line a model or pass --model"
    err = fail([{"prompt": "a", "model": "x"}, "", {"prompt": "b"}])
    assert (err.line, err.field) == (3, "model")


def test_duplicate_custom_id() -> None:
    lines = [
        {"custom_id": "a", "prompt": "1"},
        '"x"',
        {"custom_id": "b", "prompt": "2"},
        {"custom_id": "a", "prompt": "3"},
    ]
    err = fail(lines, default_model="m")
    assert (err.line, err.field) == (4, "custom_id")
    assert "duplicate" in err.reason and "first on line 1" in err.reason


def test_custom_ids_are_at_most_1024_bytes() -> None:
    assert MAX_CUSTOM_ID_BYTES == 1024
    longest = ["a" * 1024, "é" * 512, "🙂" * 256, 10 ** (1023)]  # bytes of UTF-8; an int's digits
    lines = [{"custom_id": cid, "prompt": "p"} for cid in longest]
    assert [len(i.custom_id.encode()) for i in parse(lines, default_model="m")] == [1024] * 4
    openai = {"custom_id": "x" * 1024, "url": "/v1/completions", "body": {"prompt": "p"}}
    assert one(openai).custom_id == "x" * 1024
    for cid, size in (("a" * 1025, 1025), ("é" * 513, 1026), ("🙂" * 257, 1028), (10**1024, 1025)):
        err = fail(['"first"', {"custom_id": cid, "prompt": "p"}], default_model="m")
        assert (err.line, err.field) == (2, "custom_id")
        assert err.reason == f"is {size} bytes long; the most is 1024 (UTF-8)"
    fail_line({**openai, "custom_id": "x" * 1025}, "custom_id", match="1025 bytes long")


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('{"prompt": "a", "model": "m", "prompt": "b"}', "prompt"),
        ('{"prompt": "a", "options": {"seed": 1, "top_k": 2, "seed": 3}}', "seed"),
        ('{"messages": [{"role": "user", "content": "x", "role": "system"}]}', "role"),
        ('{"prompt": "p", "format": {"properties": {"a": {}, "a": {}}}}', "a"),
        (
            '{"custom_id": "1", "url": "/v1/completions", "body": {"prompt": "p"}, "url": "x"}',
            "url",
        ),
        ('{"prompt": "p", "": 1, "": 2}', ""),
    ],
)
def test_a_key_given_twice_is_refused_naming_it(line: str, key: str) -> None:
    # json would keep the last silently: a line that does not say what it seems to.
    err = fail_line(line, None)
    assert err.reason == f"invalid JSON: duplicate key {key!r}: a key may appear once in an object"


def test_keys_twice_in_tool_call_arguments_or_apart_are_told_apart() -> None:
    call = {"function": {"name": "f", "arguments": '{"x": 1, "x": 2}'}}
    msg = {"role": "assistant", "tool_calls": [call]}
    where = "body.messages[0].tool_calls[0].function.arguments"
    fail_line(chat_line({"messages": [msg]}), where, match="duplicate key 'x'")
    # The same key in different objects, or as text, is no duplicate.
    same = {"prompt": '{"a": 1, "a": 2}', "options": {"a": 1}, "format": {"a": {"a": 1}}}
    assert one(same).body["options"] == {"a": 1}


def test_duplicate_of_a_default_id_and_of_an_int_id() -> None:
    err = fail(['"x"', '"y"', {"custom_id": "1", "prompt": "z"}], default_model="m")
    assert (err.line, err.field) == (3, "custom_id") and "line 2" in err.reason
    err = fail(
        [{"custom_id": 5, "prompt": "a"}, "", {"custom_id": "5", "prompt": "b"}], default_model="m"
    )
    assert (err.line, err.field) == (3, "custom_id") and "line 1" in err.reason


def test_duplicate_of_an_openai_id() -> None:
    oai = {"custom_id": "r", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}}
    err = fail([oai, {"custom_id": "r", "prompt": "p"}], default_model="m")
    assert (err.line, err.field) == (2, "custom_id")


# --- properties -----------------------------------------------------------------------------

KEYS = [
    "custom_id",
    "model",
    "prompt",
    "messages",
    "system",
    "options",
    "format",
    "keep_alive",
    "think",
    "images",
    "tools",
    "role",
    "content",
    "tool_calls",
    "url",
    "body",
    "method",
    "type",
    "text",
    "image_url",
    "max_tokens",
    "stop",
    "response_format",
    "n",
    "input",
    "dimensions",
    "truncate",
    "x",
]
VALUES = [
    "user",
    "assistant",
    "tool",
    "json",
    "POST",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "text",
    "image_url",
    "data:image/png;base64,AA",
    "json_object",
    "low",
    "0",
    "1",
    "",
]

BODY_KEYS = [
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "temperature",
    "seed",
    "stop",
    "n",
    "response_format",
    "tools",
    "stream",
    "suffix",
    "logit_bias",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.sampled_from(VALUES),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=3), children, max_size=5)
    ),
    max_leaves=12,
)


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values nine times in ten, anything JSON otherwise."""
    return st.integers(0, 9).flatmap(lambda k: json_values if k == 9 else good)


text = st.text(max_size=3)
parts = st.lists(
    st.fixed_dictionaries(
        {"type": mostly(st.sampled_from(["text", "image_url"]))},
        optional={
            "text": mostly(text),
            "image_url": mostly(
                st.sampled_from(["data:image/png;base64,AA", "http://x"])
                | st.fixed_dictionaries({"url": st.sampled_from(["data:a;base64,QQ", "f"])})
            ),
        },
    ),
    max_size=3,
)
call = st.fixed_dictionaries(
    {
        "function": mostly(
            st.fixed_dictionaries(
                {"name": mostly(st.just("f"))}, optional={"arguments": mostly(st.just("{}"))}
            )
        )
    },
    optional={"id": st.sampled_from(["c1", "c2"])},
)
message = st.fixed_dictionaries(
    {"role": mostly(st.sampled_from(["user", "assistant", "tool", "system", "developer"]))},
    optional={
        "content": mostly(text | parts),
        "tool_calls": mostly(st.lists(call, max_size=2)),
        "tool_call_id": st.sampled_from(["c1", "c2"]),
    },
)
messages = mostly(st.lists(message, min_size=1, max_size=3))
custom_ids = mostly(st.sampled_from(["a", "b", "0", "1"]))
line_objects = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), json_values | messages, max_size=6),
    st.fixed_dictionaries(
        {"custom_id": custom_ids | st.integers(0, 3)},
        optional={
            "prompt": mostly(text),
            "messages": messages,
            "input": mostly(text | st.lists(text, max_size=3)),
            "dimensions": mostly(st.integers(1, 9)),
            "model": mostly(st.just("m2")),
            "system": mostly(text),
            "options": mostly(st.just({"temperature": 0})),
            "think": mostly(st.sampled_from([True, "low"])),
            "format": mostly(st.sampled_from(["json", {}])),
        },
    ),
    st.fixed_dictionaries(
        {
            "custom_id": custom_ids,
            "url": mostly(
                st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
            ),
            "body": st.fixed_dictionaries(
                {},
                optional={
                    "messages": messages,
                    "prompt": mostly(text),
                    "input": mostly(text | st.lists(text, max_size=3)),
                    "model": mostly(st.just("m2")),
                    "max_tokens": mostly(st.integers(1, 9)),
                    "temperature": mostly(st.floats(0, 2)),
                    "stop": mostly(text | st.lists(text)),
                    "n": mostly(st.just(1)),
                    "stream": json_values,
                    "response_format": mostly(
                        st.sampled_from(
                            [
                                {"type": "json_object"},
                                {"type": "json_schema", "json_schema": {"schema": {}}},
                            ]
                        )
                    ),
                },
            ),
        },
        optional={"method": mostly(st.just("POST"))},
    ),
)
line_strategy = st.one_of(
    json_values.map(json.dumps),
    line_objects.map(json.dumps),
    st.sampled_from(["", "  ", "{", '"\\ud800"', "[", "NaN", "\ufeff"]),
    st.text(max_size=10),
)


def _check(data: bytes, **kwargs: Any) -> None:
    try:
        items = list(iter_items(io.BytesIO(data), default_model="m", **kwargs))
    except InputError:
        return
    assert items
    ids = [item.custom_id for item in items]
    assert len(set(ids)) == len(ids)
    for item in items:
        assert isinstance(item.custom_id, str) and item.custom_id
        assert item.endpoint in (GEN, CHAT, Endpoint.EMBED)
        if item.endpoint is Endpoint.EMBED:
            texts = item.body["input"]
            assert isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts)
            assert all(texts)
        assert isinstance(item.body["model"], str) and item.body["model"]
        assert "stream" not in item.body
        assert item.body.get("options", True)
        item.dumps().encode()  # storable: no lone surrogates, no NaN
        assert Item.loads(item.dumps(), checked=True) == item  # and what a worker decodes


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_bytes_give_items_or_input_error(data: bytes) -> None:
    _check(data)
    _check(data, fmt="txt")
    _check(data, max_line_bytes=8)


@given(st.lists(line_strategy, max_size=6), st.sampled_from(["\n", "\r\n"]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_json_lines_give_items_or_input_error(lines: list[str], end: str) -> None:
    _check(end.join(lines).encode("utf-8", "surrogatepass"))


@given(st.lists(st.sampled_from(["a", "b", "0", "1", "2"]), min_size=1, max_size=8))
def test_duplicates_are_always_caught(ids: list[str]) -> None:
    data = as_bytes([{"custom_id": i, "prompt": "p"} for i in ids])
    if len(set(ids)) == len(ids):
        assert [item.custom_id for item in parse(data, default_model="m")] == ids
    else:
        first_dup = next(n for n, i in enumerate(ids) if i in ids[:n])
        err = fail(data, default_model="m")
        assert (err.line, err.field) == (first_dup + 1, "custom_id")


# --- bounded memory -------------------------------------------------------------------------


class _GeneratedLines(io.RawIOBase):
    """A stream whose lines are made on demand, so that the input itself takes no memory."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = lines
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            self._pending = next(self._lines, b"")
            if not self._pending:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def test_memory_stays_bounded() -> None:
    count, per_block = 200_000, 1000

    def blocks() -> Iterator[bytes]:
        # 50 MB in all, more than the budget, made a block of lines at a time (cheaper than one
        # at a time). Every custom_id differs, so the duplicate check ends up holding 200,000.
        line = b'"' + b"say hello " * 25 + b'"\n'
        block = line * (per_block - 1) + b'{"custom_id": "last", "prompt": "p"}\n'
        for _ in range(count // per_block):
            yield block.replace(b"last", b"last-%d" % next(serial))

    serial = iter(range(count))
    stream = io.BufferedReader(_GeneratedLines(blocks()))
    tracemalloc.start()
    try:
        seen = sum(1 for _ in iter_items(stream, default_model="m"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_one_giant_line_is_not_read_whole() -> None:
    def lines() -> Iterator[bytes]:
        yield b'"fine"\n'
        while True:  # an endless line: only the limit may ever be read from it
            yield b"x" * 65536

    stream = io.BufferedReader(_GeneratedLines(lines()))
    err = fail_stream(stream, max_line_bytes=1 << 20)
    assert (err.line, err.reason) == (2, "line is longer than the limit of 1048576 bytes")


def fail_stream(stream: Any, **kwargs: Any) -> InputError:
    with pytest.raises(InputError) as info:
        list(iter_items(stream, default_model="m", **kwargs))
    return info.value


def test_wrong_arguments_fail_at_the_call() -> None:
    with pytest.raises(ValueError, match="format"):
        iter_items(io.BytesIO(b'"a"'), fmt="csv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_line_bytes"):
        iter_items(io.BytesIO(b'"a"'), max_line_bytes=0)
