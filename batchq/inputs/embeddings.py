"""Embeddings input lines: a native line with ``input``, or the body of an OpenAI batch line
for ``/v1/embeddings``, checked and turned into an Ollama ``/api/embed`` request.

``input`` is a non-empty string or a non-empty array of non-empty strings (OpenAI's token
arrays are not supported); it is always stored as an array, one vector per string.
"""

from __future__ import annotations

from typing import Any

from batchq.inputs.fields import Bad, check_int, check_model, check_str, type_name

__all__ = ["EMBEDDINGS_URL", "NOT_FOR_EMBED", "native_embed_body", "openai_embed_body"]

EMBEDDINGS_URL = "/v1/embeddings"
# What /api/embed does not take: an embeddings line with one is an error, not silently cut.
NOT_FOR_EMBED = ("system", "images", "tools", "format", "think")
_OPENAI_KEYS = frozenset({"model", "input", "dimensions", "encoding_format", "user"})


def native_embed_body(obj: dict[str, Any], body: dict[str, Any]) -> None:
    """Fill ``body`` (which has the model) from a native line with ``input``; the options
    common to every native line are the caller's."""
    for key in NOT_FOR_EMBED:
        if key in obj:
            raise Bad("not supported with input (embeddings)", key)
    body["input"] = _embed_input(obj["input"], "input")
    if "truncate" in obj:
        truncate = obj["truncate"]
        if not isinstance(truncate, bool):
            raise Bad(f"must be true or false, got {type_name(truncate)}", "truncate")
        body["truncate"] = truncate
    if "dimensions" in obj:
        body["dimensions"] = _dimensions(obj["dimensions"], "dimensions")


def _embed_input(value: object, field: str) -> list[str]:
    """Text to embed, always as a list: one vector comes back per string."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list):
        raise Bad(f"must be a string or an array of strings, got {type_name(value)}", field)
    if not texts:
        raise Bad("must not be empty", field)
    for i, text in enumerate(texts):
        where = field if isinstance(value, str) else f"{field}[{i}]"
        if isinstance(text, int | list) and not isinstance(text, bool):
            raise Bad("token arrays are not supported: give the text", where)
        if not check_str(text, where):
            raise Bad("must not be empty", where)
    return texts


def _dimensions(value: object, field: str) -> int:
    dimensions = check_int(value, field)
    if dimensions < 1:
        raise Bad("must be at least 1", field)
    return dimensions


def openai_embed_body(src: dict[str, Any], default_model: str | None) -> dict[str, Any]:
    """The /api/embed request of an OpenAI ``/v1/embeddings`` line's body."""
    for key in src:
        if key not in _OPENAI_KEYS:
            raise Bad(f"not supported for {EMBEDDINGS_URL}", f"body.{key}")
    if "input" not in src:
        raise Bad(f"required for {EMBEDDINGS_URL}", "body.input")
    body: dict[str, Any] = {"model": check_model(src, default_model, "body.model")}
    body["input"] = _embed_input(src["input"], "body.input")
    if src.get("dimensions") is not None:
        body["dimensions"] = _dimensions(src["dimensions"], "body.dimensions")
    # batchq writes vectors as numbers; a client that asked for base64 would misread them.
    if src.get("encoding_format", "float") not in ("float", None):
        raise Bad('only "float" is supported', "body.encoding_format")
    return body
