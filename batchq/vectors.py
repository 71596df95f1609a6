"""Embedding vectors: stored as base64 little-endian float32, written out as JSON numbers.

Ollama computes embeddings in float32 and sends them as decimals of about 12 characters each
(20 for a float64 repr); base64 float32 takes 5.33 characters a value and loses nothing, so a
768-dimension vector is stored in 4,096 bytes instead of ~9,500. It is also the encoding of
OpenAI's ``encoding_format: "base64"``. Written out, each value has 9 significant digits: enough
to read back the same float32, and faster than Python's repr of the widened float64.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import sys
from array import array
from collections.abc import Iterable
from typing import Any

__all__ = ["RawJSON", "dumps", "pack", "unpack", "vector_json", "vectors_json"]

_BIG_ENDIAN = sys.byteorder == "big"


def pack(vector: object) -> str:
    """One vector as base64 float32; raises ValueError unless it is a non-empty list of finite
    numbers that fit a float32."""
    if not isinstance(vector, list) or not vector:
        raise ValueError("a vector must be a non-empty array of numbers")
    try:
        floats = array("f", vector)
    except (TypeError, OverflowError):
        raise ValueError("a vector must hold only numbers") from None
    if any(isinstance(v, bool) for v in vector):
        raise ValueError("a vector must hold only numbers")
    # Checked after the cast: a value beyond float32's range becomes inf there.
    if not all(map(math.isfinite, floats)):
        raise ValueError("a vector holds a value that is not a finite float32")
    if _BIG_ENDIAN:
        floats.byteswap()
    return base64.b64encode(floats.tobytes()).decode("ascii")


def unpack(text: str) -> list[float]:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a stored vector is not base64") from None
    if len(raw) % 4:
        raise ValueError("a stored vector is not a whole number of float32 values")
    floats = array("f")
    floats.frombytes(raw)
    if _BIG_ENDIAN:
        floats.byteswap()
    return floats.tolist()


_FORMAT = "{:.9g}".format


def vector_json(vector: Iterable[float]) -> RawJSON:
    """``[...]``, each value with 9 significant digits: exact for a float32."""
    return RawJSON("[" + ",".join(map(_FORMAT, vector)) + "]")


def vectors_json(vectors: Iterable[Iterable[float]]) -> RawJSON:
    return RawJSON("[" + ",".join(map(vector_json, vectors)) + "]")


class RawJSON(str):
    """JSON text that :func:`dumps` embeds as it is."""


def dumps(obj: Any) -> str:
    """Compact JSON of ``obj`` in which :class:`RawJSON` values are written verbatim."""
    if isinstance(obj, RawJSON):
        return str(obj)
    if isinstance(obj, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)}:{dumps(v)}" for k, v in obj.items())
        return "{" + ",".join(items) + "}"
    if isinstance(obj, list):
        return "[" + ",".join(map(dumps, obj)) + "]"
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
