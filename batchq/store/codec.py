"""The stored form of one item's result, written once by whichever script makes the item
final and read back in input order by the export.

A stored result is compact (``{"s", "r", "e", "a", "m", "v"}``, see :func:`encode_result`);
the custom id and model come from the item itself, so they are not stored twice, and embedding
vectors are base64 float32 (see :mod:`batchq.vectors`). A long response is stored compressed:
a JSON head with the status and attempts, a newline, then the rest of the JSON, zlib-deflated
(a compact JSON text never holds a raw newline, so the first one ends the head).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from batchq.records import Item, ItemError, ItemResult, ItemStatus
from batchq.vectors import unpack

__all__ = ["COMPRESS_OVER", "decode_result", "encode_result", "text"]

# Responses longer than this (characters) are stored deflated: model output shrinks to about
# half or less, and even random text (no model writes it) to three quarters.
COMPRESS_OVER = 512


def encode_result(
    status: ItemStatus,
    *,
    response: str | None = None,
    error: ItemError | None = None,
    attempts: int = 0,
    metrics: dict[str, Any] | None = None,
    embeddings: list[str] | None = None,
) -> str | bytes:
    """The stored form of a result. ``embeddings`` are vectors already packed by
    :func:`batchq.vectors.pack`; an embeddings result has no text, so ``response`` is then
    not stored. Long responses come back deflated, as bytes (see the module's docstring)."""
    head: dict[str, Any] = {"s": status.value, "a": attempts}
    rest: dict[str, Any] = {}
    if embeddings is not None:
        rest["v"] = embeddings
    elif response is not None:
        rest["r"] = response
    if error is not None:
        rest["e"] = error.model_dump()
    if metrics:
        rest["m"] = metrics
    if response is not None and embeddings is None and len(response) > COMPRESS_OVER:
        # Level 6 (zlib's default) deflates a few KB in well under a millisecond.
        return _dumps(head).encode() + b"\n" + zlib.compress(_dumps(rest).encode(), 6)
    return _dumps(head | rest)


def _dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


def _loads_result(raw: bytes) -> dict[str, Any]:
    cut = raw.find(b"\n")
    if cut < 0:
        d: dict[str, Any] = json.loads(raw)
        return d
    return {**json.loads(raw[:cut]), **json.loads(zlib.decompress(raw[cut + 1 :]))}


def decode_result(
    index: int, item: Item | None, raw: bytes | None, *, prior: int = 0
) -> ItemResult:
    """A stored result as an output line; no stored result means cancelled before dispatch.
    ``prior``: attempts of the item's earlier runs, which the stored result does not count."""
    d: dict[str, Any] = _loads_result(raw) if raw else {"s": ItemStatus.CANCELLED.value}
    return ItemResult(
        index=index,
        custom_id=item.custom_id if item else str(index),
        status=ItemStatus(d["s"]),
        response=d.get("r"),
        error=ItemError(**d["e"]) if d.get("e") else None,
        attempts=d.get("a", 0) + prior,
        model=item.model if item else None,
        metrics=d.get("m"),
        embeddings=[unpack(v) for v in d["v"]] if "v" in d else None,
    )


def text(value: object) -> str:
    """A Redis reply's value as text: the client returns bytes; None (a missing field) is ""."""
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
