"""Requests of Anthropic's Message Batches (``{custom_id, params}``), checked and translated to
the native Ollama chat request.

``params`` are a Messages request: ``model``, ``max_tokens`` (Ollama's ``options.num_predict``),
``messages`` (``user`` and ``assistant`` turns whose content is a string or text blocks),
``system`` (a string or text blocks, the chat's first message), ``temperature``, ``top_p``,
``top_k`` and ``stop_sequences`` (``options.stop``). Fields that do not change what the model
generates (``metadata``, ``service_tier``, a block's ``cache_control`` and ``citations``) are
accepted and dropped; any other field (tools, images, thinking) is refused, naming it, so that
a batch never runs with part of its request silently lost.
"""

from __future__ import annotations

import re
from typing import Any

from batchq.inputs.fields import (
    Bad,
    check_int,
    check_list,
    check_obj,
    check_str,
    check_str_list,
    each_message,
    is_number,
    type_name,
)
from batchq.records import Endpoint, Item

__all__ = ["CUSTOM_ID_RE", "anthropic_item"]

# Anthropic's own rule for a custom id.
CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

_REQUEST_KEYS = frozenset({"custom_id", "params"})
_PARAM_KEYS = frozenset({"model", "max_tokens", "messages", "system", "stop_sequences"})
_PARAM_KEYS |= {"temperature", "top_p", "top_k"}
_IGNORED = frozenset({"metadata", "service_tier", "stream"})
_MESSAGE_KEYS = frozenset({"role", "content"})
_ROLES = ("user", "assistant")
_TEXT_BLOCK_KEYS = frozenset({"type", "text", "cache_control", "citations"})


def anthropic_item(obj: object) -> Item:
    """The native chat request for one entry of ``requests``; raises
    :class:`~batchq.inputs.fields.Bad` naming the field (``params.messages[0].content``)."""
    request = check_obj(obj, "request")
    for key in request:
        if key not in _REQUEST_KEYS:
            raise Bad("unknown field (a request has custom_id and params)", key)
    if "custom_id" not in request:
        raise Bad("required", "custom_id")
    custom_id = check_str(request["custom_id"], "custom_id")
    if not CUSTOM_ID_RE.match(custom_id):
        raise Bad("must be 1 to 64 letters, digits, '_' or '-'", "custom_id")
    if "params" not in request:
        raise Bad("required", "params")
    params = check_obj(request["params"], "params")
    for key in params:
        if key not in _PARAM_KEYS and key not in _IGNORED:
            raise Bad("not supported by batchq's Message Batches", f"params.{key}")
    if params.get("stream") not in (None, False):
        raise Bad("a batch request is not streamed", "params.stream")
    for key in ("model", "max_tokens", "messages"):
        if key not in params:
            raise Bad("required", f"params.{key}")
    model = check_str(params["model"], "params.model", non_empty=True)
    max_tokens = check_int(params["max_tokens"], "params.max_tokens")
    if max_tokens < 1:
        raise Bad("must be at least 1", "params.max_tokens")
    messages: list[dict[str, Any]] = []
    if params.get("system") is not None:
        system = _text(params["system"], "params.system")
        if system:
            messages.append({"role": "system", "content": system})
    for where, msg, role in each_message(
        params["messages"], "params.messages", keys=_MESSAGE_KEYS, roles=_ROLES
    ):
        if "content" not in msg:
            raise Bad("required", f"{where}.content")
        messages.append({"role": role, "content": _text(msg["content"], f"{where}.content")})
    body: dict[str, Any] = {"model": model, "messages": messages}
    body["options"] = _options(params) | {"num_predict": max_tokens}
    return Item(custom_id, Endpoint.CHAT, body)


def _options(params: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name in ("temperature", "top_p"):
        value = params.get(name)
        if value is not None:
            if not is_number(value):
                raise Bad(f"must be a number, got {type_name(value)}", f"params.{name}")
            options[name] = value
    if params.get("top_k") is not None:
        options["top_k"] = check_int(params["top_k"], "params.top_k")
    if params.get("stop_sequences") is not None:
        stops = check_str_list(params["stop_sequences"], "params.stop_sequences")
        for i, stop in enumerate(stops):
            if not stop:
                raise Bad("must not be empty", f"params.stop_sequences[{i}]")
        if stops:
            options["stop"] = stops
    return options


def _text(value: object, field: str) -> str:
    """A string, or the text of a list of text blocks (joined as Ollama takes one string)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise Bad(f"must be a string or a list of text blocks, got {type_name(value)}", field)
    texts: list[str] = []
    for i, block in enumerate(check_list(value, field)):
        where = f"{field}[{i}]"
        spec = check_obj(block, where)
        if spec.get("type") != "text":
            raise Bad('only text blocks are supported (type "text")', f"{where}.type")
        for key in spec:
            if key not in _TEXT_BLOCK_KEYS:
                raise Bad("unknown field of a text block", f"{where}.{key}")
        texts.append(check_str(spec.get("text"), f"{where}.text"))
    return "\n".join(texts)
