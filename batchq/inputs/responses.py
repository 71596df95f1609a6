"""OpenAI Responses API request bodies (the ``body`` of a ``/v1/responses`` batch line),
checked and translated to Ollama's ``/api/chat``: ``instructions`` becomes a system message,
``input`` (a string, or a list of message items whose content is a string or ``input_text``
/ ``output_text`` parts) the messages, ``max_output_tokens`` ``num_predict``, ``temperature``
and ``top_p`` the same options. The output side is :mod:`batchq.results.responses`.
"""

from __future__ import annotations

from typing import Any

from batchq.inputs.fields import (
    Bad,
    check_int,
    check_list,
    check_model,
    check_obj,
    check_str,
    is_number,
    type_name,
)

__all__ = ["RESPONSES_URL", "responses_chat_body"]

RESPONSES_URL = "/v1/responses"
_KEYS = frozenset({"model", "input", "instructions", "max_output_tokens", "temperature", "top_p"})
# Fields that do not change what the model generates, or that batchq handles itself.
_IGNORED = frozenset({"stream", "store", "metadata", "user", "service_tier", "truncation"})
_ROLES = ("user", "system", "developer", "assistant")
_ITEM_KEYS = frozenset({"type", "role", "content", "id", "status"})
_PART_TYPES = ("input_text", "output_text")


def responses_chat_body(src: dict[str, Any], default_model: str | None) -> dict[str, Any]:
    """Ollama's chat body for one Responses request; raises :class:`Bad` naming the field."""
    for key in src:
        if key not in _KEYS and key not in _IGNORED:
            raise Bad(f"not supported for {RESPONSES_URL}", f"body.{key}")
    body: dict[str, Any] = {"model": check_model(src, default_model, "body.model")}
    messages: list[dict[str, Any]] = []
    if src.get("instructions") is not None:
        instructions = check_str(src["instructions"], "body.instructions")
        messages.append({"role": "system", "content": instructions})
    if "input" not in src:
        raise Bad(f"required for {RESPONSES_URL}", "body.input")
    value = src["input"]
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
    else:
        messages.extend(_messages(value))
    body["messages"] = messages
    options: dict[str, Any] = {}
    if src.get("max_output_tokens") is not None:
        tokens = check_int(src["max_output_tokens"], "body.max_output_tokens")
        if tokens < 1:
            raise Bad("must be at least 1", "body.max_output_tokens")
        options["num_predict"] = tokens
    for name in ("temperature", "top_p"):
        if src.get(name) is not None:
            if not is_number(src[name]):
                raise Bad(f"must be a number, got {type_name(src[name])}", f"body.{name}")
            options[name] = src[name]
    if options:
        body["options"] = options
    return body


def _messages(value: object) -> list[dict[str, Any]]:
    items = check_list(value, "body.input")
    if not items:
        raise Bad("must not be empty", "body.input")
    out = []
    for i, raw in enumerate(items):
        where = f"body.input[{i}]"
        item = check_obj(raw, where)
        for key in item:
            if key not in _ITEM_KEYS:
                raise Bad(
                    "unknown field (a message item has type, role, content)", f"{where}.{key}"
                )
        if item.get("type", "message") != "message":
            raise Bad('only "message" items are supported', f"{where}.type")
        role = item.get("role")
        if role not in _ROLES:
            raise Bad(f"must be one of {', '.join(_ROLES)}, got {role!r:.40}", f"{where}.role")
        out.append(
            {
                "role": "system" if role == "developer" else role,
                "content": _content(item.get("content"), f"{where}.content"),
            }
        )
    return out


def _content(value: object, field: str) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise Bad(f"must be a string or a list of parts, got {type_name(value)}", field)
    texts = []
    for j, raw in enumerate(value):
        part = check_obj(raw, f"{field}[{j}]")
        if part.get("type") not in _PART_TYPES:
            raise Bad('unsupported content part type (use "input_text")', f"{field}[{j}].type")
        texts.append(check_str(part.get("text"), f"{field}[{j}].text"))
    return "\n".join(texts)
