"""Checks of one JSON value inside an input line, each naming the field it checks.

A broken rule raises :class:`Bad` with the field's dotted path (``body.messages[2].role``);
:func:`batchq.inputs.native.iter_items` adds the line number and turns it into an
:class:`~batchq.errors.InputError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from batchq.errors import BatchqError
from batchq.records import MAX_JSON_DEPTH, deeper_than

__all__ = [
    "DECODER",
    "NO_MODEL",
    "Bad",
    "DuplicateKey",
    "check_depth",
    "check_int",
    "check_list",
    "check_model",
    "check_obj",
    "check_obj_list",
    "check_str",
    "check_str_list",
    "each_message",
    "is_number",
    "type_name",
]

NO_MODEL = "no model: give the line a model or pass --model"


class _NumberError(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    # 1e999 parses to inf, which json.dumps would later write as the non-JSON token Infinity.
    if math.isinf(value):
        raise _NumberError(f"number {text} is out of range")
    return value


def _reject_constant(text: str) -> float:
    raise _NumberError(f"{text} is not valid JSON")


class DuplicateKey(ValueError):
    """An object of the line has a key twice: json keeps the last, silently."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r:.80}")
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


# Strict JSON for every line and every JSON string inside one (OpenAI's tool-call arguments).
# One decoder for all: json.loads with keyword arguments would build a new one per call.
# The pairs hook costs ~0.3 µs per object (a submit of 1M lines spends ~18 µs on each).
DECODER = json.JSONDecoder(
    parse_float=_finite_float, parse_constant=_reject_constant, object_pairs_hook=_unique_keys
)


class Bad(BatchqError):
    """A rule broken inside a line; :func:`iter_items` adds the line number."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def check_depth(value: object, prefix: str = "") -> None:
    """Refuse ``value`` (decoded JSON at the field ``prefix``) if it nests deeper than
    :data:`~batchq.records.MAX_JSON_DEPTH`, naming where it does."""
    path = deeper_than(value, MAX_JSON_DEPTH)
    if path is None:
        return
    # The first few levels say where; all 64 would not fit a line.
    field = prefix
    for key in path[:4]:
        field += f"[{key}]" if isinstance(key, int) else (f".{key:.40}" if field else f"{key:.40}")
    raise Bad(
        f"nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects",
        field + ("…" if len(path) > 4 else "") if field else None,
    )


def check_model(obj: dict[str, Any], default_model: str | None, field: str) -> str:
    if "model" in obj:
        return check_str(obj["model"], field, non_empty=True)
    if default_model is None:
        raise Bad(NO_MODEL, field)
    return default_model


_TYPE_NAMES = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string"}


def type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value)) or ("array" if isinstance(value, list) else "object")


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_str(value: object, field: str, *, non_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise Bad(f"must be a string, got {type_name(value)}", field)
    if non_empty and not value:
        raise Bad("must not be empty", field)
    return value


def check_int(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise Bad(f"must be an integer, got {type_name(value)}", field)
    return value


def check_obj(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Bad(f"must be an object, got {type_name(value)}", field)
    return value


def check_list(value: object, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise Bad(f"must be an array, got {type_name(value)}", field)
    return value


def check_str_list(value: object, field: str) -> list[str]:
    return [check_str(item, f"{field}[{i}]") for i, item in enumerate(check_list(value, field))]


def check_obj_list(value: object, field: str) -> list[dict[str, Any]]:
    return [check_obj(item, f"{field}[{i}]") for i, item in enumerate(check_list(value, field))]


def each_message(
    value: object, field: str, *, keys: frozenset[str], roles: tuple[str, ...]
) -> Iterator[tuple[str, dict[str, Any], str]]:
    """The messages of a chat, each checked to be an object with no key outside ``keys`` and
    a ``role`` among ``roles``: yields (its path, the message, its role). An empty list is
    refused: a chat request needs a message."""
    messages = check_list(value, field)
    if not messages:
        raise Bad("must not be empty", field)
    for i, message in enumerate(messages):
        where = f"{field}[{i}]"
        msg = check_obj(message, where)
        for key in msg:
            if key not in keys:
                raise Bad("unknown field", f"{where}.{key}")
        role = msg.get("role")
        if not isinstance(role, str) or role not in roles:
            raise Bad("must be one of " + ", ".join(roles), f"{where}.role")
        yield where, msg, role
