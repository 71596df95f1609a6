"""Streaming parser and validator of a batch input file: one line in, at most one :class:`Item` out.

Two formats. ``txt``: every non-blank line is a prompt for ``/api/generate``. ``jsonl``: every
non-blank line is one of

- a JSON string: a prompt for ``/api/generate``;
- a native object: ``prompt`` (generate), ``messages`` (chat) or ``input`` (embed, see
  :mod:`batchq.inputs.embeddings`), plus optional ``custom_id``, ``model``, ``system``, ``options``,
  ``format``, ``keep_alive``, ``think``, ``images``, ``tools``, ``suffix``;
- an OpenAI batch request line (``custom_id``, ``method``, ``url``, ``body``) for
  ``/v1/chat/completions``, ``/v1/completions`` or ``/v1/embeddings``, translated to the
  native request (see :mod:`batchq.inputs.openai`).

The file is read one bounded line at a time, so neither a huge file nor one huge line can exhaust
memory; the first bad line stops the parse with an :class:`InputError` naming line and field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Literal

from batchq.errors import InputError
from batchq.inputs.embeddings import native_embed_body
from batchq.inputs.fields import (
    DECODER,
    NO_MODEL,
    Bad,
    DuplicateKey,
    check_depth,
    check_model,
    check_obj,
    check_obj_list,
    check_str,
    check_str_list,
    each_message,
    is_number,
    type_name,
)
from batchq.inputs.openai import openai_item
from batchq.records import MAX_JSON_DEPTH, Endpoint, Item, may_nest_deeper

__all__ = ["MAX_CUSTOM_ID_BYTES", "InputFormat", "detect_format", "iter_items"]

InputFormat = Literal["jsonl", "txt"]

# A custom id is a key: it is stored twice (the id index, the result) and shown by `item` and
# in every result line. Room for a path or a URL; not for a document.
MAX_CUSTOM_ID_BYTES = 1024

_NATIVE_KEYS = frozenset({"custom_id", "model", "prompt", "messages", "system", "images"})
# "stream" is accepted and dropped: copied Ollama requests often say stream=false, and batchq
# decides streaming itself.
_NATIVE_KEYS |= {"tools", "options", "format", "keep_alive", "think", "stream"}
_NATIVE_KEYS |= {"input", "truncate", "dimensions"}
# Ollama's fill-in-the-middle text; OpenAI completion lines carry it too, so that every Item
# has a native line (what the Python API turns Items back into to validate them).
_NATIVE_KEYS |= {"suffix"}
_NATIVE_KEYS_HINT = (
    "unknown field (a line may have custom_id, model, prompt or messages or input, system, "
    "options, format, keep_alive, think, images, suffix, tools, truncate, dimensions)"
)

_ROLES = ("system", "user", "assistant", "tool")
_MESSAGE_KEYS = frozenset({"role", "content", "images", "tool_calls", "tool_name", "thinking"})
_THINK_LEVELS = frozenset({"low", "medium", "high"})

# The decoder's C scanner on its own: decode() wraps it in two regex matches that cost a third
# of the parse time. (typeshed does not declare the attribute.)
_SCAN: Callable[[str, int], tuple[Any, int]] = DECODER.scan_once  # type: ignore[attr-defined]
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def detect_format(path: str) -> InputFormat:
    """``txt`` for a ``.txt`` file, ``jsonl`` for anything else (including ``-``, stdin)."""
    return "txt" if path.lower().endswith(".txt") else "jsonl"


def iter_items(
    stream: BinaryIO,
    *,
    fmt: InputFormat = "jsonl",
    default_model: str | None = None,
    max_line_bytes: int = 1 << 20,
) -> Iterator[Item]:
    """Yield the stream's items in order, raising :class:`InputError` at the first bad line.

    Blank lines are skipped and take no index; an item's default ``custom_id`` is its 0-based
    index. ``default_model`` fills in lines without a model. ``max_line_bytes`` bounds one line
    (without its line terminator). An input without any item is an error too, raised once the
    stream is exhausted.
    """
    # Checked here, not in the generator, so that a wrong call fails at once.
    if fmt not in ("jsonl", "txt"):
        raise ValueError(f"unknown input format {fmt!r}")
    if max_line_bytes < 1:
        raise ValueError("max_line_bytes must be at least 1")
    return _items(stream, fmt, default_model or None, max_line_bytes)


def _items(
    stream: BinaryIO, fmt: InputFormat, model: str | None, max_line_bytes: int
) -> Iterator[Item]:
    # hash(custom_id) -> line of first use: a fixed 64-bit digest per id however long the ids
    # are (str hashes are keyed SipHash, cached on the string, so cheaper than blake2b). A
    # collision among a million ids has probability ~3e-8 and would only be reported as a
    # (false) duplicate, never let a real one through.
    seen: dict[int, int] = {}
    index = 0
    lineno = 0
    while True:
        # +2 leaves room for "\r\n", so the limit is on the content alone.
        raw = stream.readline(max_line_bytes + 2)
        if not raw:
            break
        lineno += 1
        size = len(raw)
        if raw.endswith(b"\n"):
            size -= 2 if raw.endswith(b"\r\n") else 1
        elif raw.endswith(b"\r"):
            size -= 1
        if size > max_line_bytes:
            raise InputError(
                f"line is longer than the limit of {max_line_bytes} bytes", line=lineno
            )
        try:
            # The terminator stays on for JSON, where it is whitespace: slicing it off would copy
            # every line once more.
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"not valid UTF-8 (byte {e.start + 1})", line=lineno) from None
        if lineno == 1 and text.startswith("\ufeff"):
            text = text[1:]
        if not text or text.isspace():
            continue
        try:
            if fmt == "txt":
                if model is None:
                    raise Bad(NO_MODEL, "model")
                if text.endswith("\n"):
                    text = text[:-1]
                if text.endswith("\r"):
                    text = text[:-1]
                item = Item(str(index), Endpoint.GENERATE, {"model": model, "prompt": text})
            else:
                item = _json_item(text, index, model)
                # Only a long one is encoded: a character is at most 4 bytes.
                if len(item.custom_id) > MAX_CUSTOM_ID_BYTES // 4:
                    _check_id_size(item.custom_id)
                first = seen.setdefault(hash(item.custom_id), lineno)
                if first != lineno:
                    message = f"duplicate custom_id {item.custom_id!r:.80} (first on line {first})"
                    raise Bad(message, "custom_id")
        except Bad as e:
            raise InputError(e.message, line=lineno, field=e.field) from None
        index += 1
        yield item
    if index == 0:
        raise InputError("the input has no items")


def _check_id_size(custom_id: str) -> None:
    size = len(custom_id.encode("utf-8", "surrogatepass"))
    if size > MAX_CUSTOM_ID_BYTES:
        raise Bad(f"is {size} bytes long; the most is {MAX_CUSTOM_ID_BYTES} (UTF-8)", "custom_id")


def _parse(text: str) -> Any:
    try:
        value, end = _SCAN(text, 0)
        if end == len(text) or not text[end:].strip(" \t\r\n"):
            return value
    except StopIteration:  # no value at column 1: leading whitespace, or not JSON at all
        pass
    # The full decoder skips leading whitespace, and words the errors with their column (which
    # a trailing newline would turn into "line 2 column 1").
    return DECODER.decode(text.rstrip("\r\n"))


def _json_item(text: str, index: int, default_model: str | None) -> Item:
    try:
        value = _parse(text)
    except json.JSONDecodeError as e:
        raise Bad(f"invalid JSON: {e.msg} (column {e.colno})") from None
    except DuplicateKey as e:
        raise Bad(f"invalid JSON: {e}: a key may appear once in an object") from None
    except RecursionError:
        raise Bad(f"nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects") from None
    except ValueError as e:  # a number the decoder refused, or an integer too long to convert
        raise Bad(f"invalid JSON: {e}") from None
    # A worker decodes what submit accepts, and sends it on: neither may run out of stack.
    # (A bare prompt cannot nest: the bench's lines, and many files, skip the count.)
    deep = type(value) is not str and may_nest_deeper(text, MAX_JSON_DEPTH)
    if deep:
        check_depth(value)
    if isinstance(value, str):
        if default_model is None:
            raise Bad(NO_MODEL, "model")
        item = Item(str(index), Endpoint.GENERATE, {"model": default_model, "prompt": value})
    elif not isinstance(value, dict):
        raise Bad(f"expected a JSON object or string, got {type_name(value)}")
    elif "url" in value or "body" in value or "method" in value:
        item = openai_item(value, default_model)
    else:
        item = _native_item(value, index, default_model)
    if deep:
        # Deeper than the line itself only where a string held JSON (tool-call arguments).
        check_depth(item.body, "body")
    # JSON can escape a lone UTF-16 surrogate ("\ud800"), which Python accepts but no UTF-8
    # writer (Redis, the HTTP body) can encode. Only lines with such an escape pay for the check.
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps([item.custom_id, item.body], ensure_ascii=False).encode()
        except (UnicodeEncodeError, RecursionError):
            raise Bad("contains a lone surrogate escape (\\ud800-\\udfff): not Unicode") from None
    return item


# --- native lines ---------------------------------------------------------------------------


def _native_item(obj: dict[str, Any], index: int, default_model: str | None) -> Item:
    for key in obj:
        if key not in _NATIVE_KEYS:
            raise Bad(_NATIVE_KEYS_HINT, key)
    custom_id = str(index)
    if "custom_id" in obj:
        raw_id = obj["custom_id"]
        if isinstance(raw_id, int) and not isinstance(raw_id, bool):
            custom_id = str(raw_id)
        else:
            custom_id = check_str(raw_id, "custom_id", non_empty=True)
    has_prompt = "prompt" in obj
    kinds = [key for key in ("prompt", "messages", "input") if key in obj]
    if len(kinds) != 1:
        raise Bad(
            f"a line has one of prompt, messages and input, not both {kinds[0]} and {kinds[1]}"
            if kinds
            else "a line needs a prompt (generate), messages (chat) or input (embeddings)"
        )
    if "suffix" in obj and not has_prompt:
        raise Bad("suffix goes with a prompt (generate)", "suffix")
    model = check_model(obj, default_model, "model")
    body: dict[str, Any] = {"model": model}
    if "input" in obj:
        native_embed_body(obj, body)
        _native_options(obj, body)
        return Item(custom_id, Endpoint.EMBED, body)
    if has_prompt:
        if "tools" in obj:
            raise Bad("tools need messages (chat), not a prompt", "tools")
        endpoint = Endpoint.GENERATE
        body["prompt"] = check_str(obj["prompt"], "prompt")
        if "system" in obj:
            body["system"] = check_str(obj["system"], "system")
        if "images" in obj:
            body["images"] = check_str_list(obj["images"], "images")
        if "suffix" in obj:
            body["suffix"] = check_str(obj["suffix"], "suffix")
    else:
        if "images" in obj:
            raise Bad("images go with a prompt; for chat, put them in a message", "images")
        endpoint = Endpoint.CHAT
        messages = _native_messages(obj["messages"], "messages")
        # /api/chat has no system field: the system prompt is the conversation's first message.
        if "system" in obj:
            messages.insert(0, {"role": "system", "content": check_str(obj["system"], "system")})
        body["messages"] = messages
        if "tools" in obj:
            body["tools"] = check_obj_list(obj["tools"], "tools")
    if "format" in obj:
        fmt = obj["format"]
        if fmt != "json" and not isinstance(fmt, dict):
            raise Bad('must be "json" or a JSON schema object', "format")
        body["format"] = fmt
    _native_options(obj, body)
    if "think" in obj:
        think = obj["think"]
        if not isinstance(think, bool) and not (isinstance(think, str) and think in _THINK_LEVELS):
            raise Bad('must be true, false, "low", "medium" or "high"', "think")
        body["think"] = think
    return Item(custom_id, endpoint, body)


def _native_options(obj: dict[str, Any], body: dict[str, Any]) -> None:
    if "options" in obj:
        options = check_obj(obj["options"], "options")
        if options:
            body["options"] = options
    if "keep_alive" in obj:
        keep_alive = obj["keep_alive"]
        if not isinstance(keep_alive, str) and not is_number(keep_alive):
            raise Bad('must be a duration string ("5m") or a number of seconds', "keep_alive")
        body["keep_alive"] = keep_alive


def _native_messages(value: object, field: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for where, msg, role in each_message(value, field, keys=_MESSAGE_KEYS, roles=_ROLES):
        messages.append(msg)
        tool_calls: list[dict[str, Any]] = []
        if "tool_calls" in msg:
            tool_calls = check_obj_list(msg["tool_calls"], f"{where}.tool_calls")
        content = msg.get("content")
        if content is None and role == "assistant" and tool_calls:
            msg["content"] = ""
        elif not isinstance(content, str):
            raise Bad(f"must be a string, got {type_name(content)}", f"{where}.content")
        if "images" in msg:
            check_str_list(msg["images"], f"{where}.images")
        for key in ("tool_name", "thinking"):
            if key in msg:
                check_str(msg[key], f"{where}.{key}")
    return messages
