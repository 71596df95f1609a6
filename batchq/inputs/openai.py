"""OpenAI batch request lines (``custom_id``, ``method``, ``url``, ``body``), checked and
translated to the native Ollama request: ``/v1/chat/completions`` (and ``/v1/responses``, see
:mod:`batchq.inputs.responses`) to ``/api/chat``,
``/v1/completions`` to ``/api/generate`` and ``/v1/embeddings`` to ``/api/embed`` (see
:mod:`batchq.inputs.embeddings`). Sampling fields become Ollama ``options``, ``response_format``
becomes ``format``, and content parts become text and base64 images.
"""

from __future__ import annotations

from typing import Any

from batchq.inputs.embeddings import EMBEDDINGS_URL, openai_embed_body
from batchq.inputs.fields import (
    DECODER,
    Bad,
    DuplicateKey,
    check_int,
    check_model,
    check_obj,
    check_obj_list,
    check_str,
    check_str_list,
    each_message,
    is_number,
    type_name,
)
from batchq.inputs.responses import RESPONSES_URL, responses_chat_body
from batchq.records import Endpoint, Item

__all__ = ["openai_item"]

_OPENAI_KEYS = frozenset({"custom_id", "method", "url", "body"})
_CHAT_URL = "/v1/chat/completions"
_COMPLETIONS_URL = "/v1/completions"
_OPENAI_URLS = (_CHAT_URL, _COMPLETIONS_URL, EMBEDDINGS_URL, RESPONSES_URL)
_OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool")
_OPENAI_MESSAGE_KEYS = frozenset({"role", "content", "name", "refusal", "tool_calls"})
_OPENAI_MESSAGE_KEYS |= {"tool_call_id"}
# Fields that do not change what the model generates, or that batchq handles itself.
_OPENAI_IGNORED = frozenset({"stream", "stream_options", "user", "metadata", "n"})
_OPENAI_IGNORED |= {"logprobs", "top_logprobs"}
_OPENAI_SAMPLING = ("temperature", "top_p", "frequency_penalty", "presence_penalty")
_OPENAI_COMMON = frozenset(
    {"model", "max_tokens", "max_completion_tokens", "seed", "stop", "response_format"}
) | frozenset(_OPENAI_SAMPLING)
_OPENAI_CHAT_KEYS = _OPENAI_COMMON | {"messages", "tools"}
_OPENAI_COMPLETIONS_KEYS = _OPENAI_COMMON | {"prompt", "suffix"}


def openai_item(obj: dict[str, Any], default_model: str | None) -> Item:
    """The native request for one OpenAI batch line (an object with ``url``, ``body`` or
    ``method``); raises :class:`~batchq.inputs.fields.Bad` naming the field."""
    for key in obj:
        if key not in _OPENAI_KEYS:
            raise Bad("unknown field (an OpenAI batch line has custom_id, method, url, body)", key)
    if "custom_id" not in obj:
        raise Bad("required in an OpenAI batch line", "custom_id")
    custom_id = check_str(obj["custom_id"], "custom_id", non_empty=True)
    if obj.get("method", "POST") != "POST":
        raise Bad('must be "POST"', "method")
    url = obj.get("url")
    if url not in _OPENAI_URLS:
        raise Bad(f"unsupported url {url!r:.80}: use {', '.join(_OPENAI_URLS)}", "url")
    if "body" not in obj:
        raise Bad("required in an OpenAI batch line", "body")
    src = check_obj(obj["body"], "body")
    if url == EMBEDDINGS_URL:
        return Item(custom_id, Endpoint.EMBED, openai_embed_body(src, default_model))
    if url == RESPONSES_URL:
        return Item(custom_id, Endpoint.CHAT, responses_chat_body(src, default_model), url)
    chat = url == _CHAT_URL
    allowed = _OPENAI_CHAT_KEYS if chat else _OPENAI_COMPLETIONS_KEYS
    for key in src:
        if key not in allowed and key not in _OPENAI_IGNORED:
            raise Bad(f"not supported for {url}", f"body.{key}")
    n = src.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise Bad("only n=1 is supported", "body.n")
    body: dict[str, Any] = {"model": check_model(src, default_model, "body.model")}
    if chat:
        if "messages" not in src:
            raise Bad("required for /v1/chat/completions", "body.messages")
        body["messages"] = _openai_messages(src["messages"], "body.messages")
        if src.get("tools") is not None:
            body["tools"] = check_obj_list(src["tools"], "body.tools")
    else:
        if "prompt" not in src:
            raise Bad("required for /v1/completions", "body.prompt")
        body["prompt"] = check_str(src["prompt"], "body.prompt")
        if src.get("suffix") is not None:
            body["suffix"] = check_str(src["suffix"], "body.suffix")
    fmt = _openai_format(src.get("response_format"))
    if fmt is not None:
        body["format"] = fmt
    options = _openai_options(src)
    if options:
        body["options"] = options
    return Item(custom_id, Endpoint.CHAT if chat else Endpoint.GENERATE, body)


def _openai_options(src: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    # OpenAI deprecated max_tokens for max_completion_tokens, so the newer one wins.
    for name in ("max_tokens", "max_completion_tokens"):
        if src.get(name) is not None:
            options["num_predict"] = check_int(src[name], f"body.{name}")
    for name in _OPENAI_SAMPLING:
        value = src.get(name)
        if value is not None:
            if not is_number(value):
                raise Bad(f"must be a number, got {type_name(value)}", f"body.{name}")
            options[name] = value
    if src.get("seed") is not None:
        options["seed"] = check_int(src["seed"], "body.seed")
    stop = src.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif stop is not None:
        options["stop"] = check_str_list(stop, "body.stop")
    return options


def _openai_format(value: object) -> str | dict[str, Any] | None:
    if value is None:
        return None
    spec = check_obj(value, "body.response_format")
    kind = spec.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        where = "body.response_format.json_schema"
        return check_obj(check_obj(spec.get("json_schema"), where).get("schema"), f"{where}.schema")
    raise Bad('must be "text", "json_object" or "json_schema"', "body.response_format.type")


def _openai_messages(value: object, field: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    # OpenAI tool results point at a call id; Ollama's name the tool, so remember id -> name.
    tool_names: dict[str, str] = {}
    for where, src, role in each_message(
        value, field, keys=_OPENAI_MESSAGE_KEYS, roles=_OPENAI_ROLES
    ):
        msg: dict[str, Any] = {"role": "system" if role == "developer" else role}
        tool_calls: list[dict[str, Any]] = []
        if src.get("tool_calls") is not None:
            if role != "assistant":
                raise Bad("only assistant messages have tool_calls", f"{where}.tool_calls")
            tool_calls = _openai_tool_calls(src["tool_calls"], f"{where}.tool_calls", tool_names)
        content = src.get("content")
        images: list[str] = []
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text, images = _openai_parts(content, f"{where}.content")
        elif content is None and tool_calls:
            text = ""
        else:
            raise Bad(
                f"must be a string or a list of parts, got {type_name(content)}",
                f"{where}.content",
            )
        msg["content"] = text
        if images:
            msg["images"] = images
        if tool_calls:
            msg["tool_calls"] = tool_calls
        call_id = src.get("tool_call_id")
        if role == "tool" and isinstance(call_id, str) and call_id in tool_names:
            msg["tool_name"] = tool_names[call_id]
        out.append(msg)
    return out


def _openai_parts(parts: list[Any], field: str) -> tuple[str, list[str]]:
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(parts):
        where = f"{field}[{j}]"
        spec = check_obj(part, where)
        kind = spec.get("type")
        if kind == "text":
            texts.append(check_str(spec.get("text"), f"{where}.text"))
        elif kind == "image_url":
            image = spec.get("image_url")
            if isinstance(image, dict):
                url, url_field = image.get("url"), f"{where}.image_url.url"
            else:
                url, url_field = image, f"{where}.image_url"
            header, _, payload = check_str(url, url_field).partition(",")
            # Ollama takes image bytes, not addresses: only inline base64 data URLs carry them.
            if not (header.startswith("data:") and header.endswith(";base64") and payload):
                raise Bad("only data: URLs with base64 content are supported", url_field)
            images.append(payload)
        else:
            raise Bad('unsupported content part type (use "text" or "image_url")', f"{where}.type")
    return "\n".join(texts), images


def _openai_tool_calls(value: object, field: str, names: dict[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for j, call in enumerate(check_obj_list(value, field)):
        where = f"{field}[{j}].function"
        function = check_obj(call.get("function"), where)
        name = check_str(function.get("name"), f"{where}.name", non_empty=True)
        arguments = function.get("arguments", {})
        # OpenAI sends arguments as a JSON-encoded string, Ollama as an object.
        if isinstance(arguments, str):
            try:
                arguments = DECODER.decode(arguments) if arguments.strip() else {}
            except DuplicateKey as e:
                raise Bad(f"must be a JSON object: {e}", f"{where}.arguments") from None
            except (ValueError, RecursionError):
                raise Bad("must be a JSON object", f"{where}.arguments") from None
        out.append(
            {"function": {"name": name, "arguments": check_obj(arguments, f"{where}.arguments")}}
        )
        call_id = call.get("id")
        if isinstance(call_id, str):
            names[call_id] = name
    return out
