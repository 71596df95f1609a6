from __future__ import annotations

import json
import math
import random
from array import array
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchq.sim.process import expected_embedding
from batchq.vectors import RawJSON, dumps, pack, unpack, vector_json, vectors_json

float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(st.lists(float32s, min_size=1, max_size=50))
def test_float32_values_survive_storage_and_output_exactly(vector: list[float]) -> None:
    stored = unpack(pack(vector))
    assert stored == vector
    # The written digits read back, as float32, to the very same values.
    assert array("f", json.loads(vector_json(stored))).tolist() == vector


def test_wider_values_are_rounded_to_float32_once() -> None:
    # Ollama's JSON decimals parse to float64s near, not at, their float32 values.
    assert unpack(pack([0.1, 1 / 3])) == array("f", [0.1, 1 / 3]).tolist()


def shortest_float32(x: float) -> str:
    """How Go (Ollama) writes a float32: the fewest digits that read back to it."""
    for digits in range(1, 10):
        text = f"{x:.{digits}g}"
        if array("f", [float(text)])[0] == x:
            return text
    raise AssertionError(x)


def test_a_768_dimension_vector_is_stored_in_under_half_of_ollamas_json() -> None:
    vector = expected_embedding("nomic-embed-text", "a sentence")
    stored = pack(vector)
    as_ollama_sends_it = "[" + ",".join(map(shortest_float32, vector)) + "]"
    assert len(stored) == 4096
    assert len(as_ollama_sends_it) > 2 * len(stored)
    assert len(vector_json(vector)) < 1.15 * len(as_ollama_sends_it)


@pytest.mark.parametrize(
    "bad",
    [[], "0.5", [0.5, "1"], [None], [[0.5]], [True, 0.5], [math.inf], [math.nan], [1e39], None],
)
def test_pack_rejects_what_is_not_a_float32_vector(bad: Any) -> None:
    with pytest.raises(ValueError, match="vector"):
        pack(bad)


@pytest.mark.parametrize("bad", ["not base64!", "AAA=", "AAAAAAA="])
def test_unpack_rejects_damaged_text(bad: str) -> None:
    with pytest.raises(ValueError, match="stored vector"):
        unpack(bad)


def test_dumps_embeds_raw_json_and_matches_json_dumps_otherwise() -> None:
    rng = random.Random(3)
    vectors = [[rng.uniform(-1, 1) for _ in range(5)] for _ in range(2)]
    obj = {"a": [1, None, 'é\n"', {"b": True}], "v": vectors_json(vectors), "n": 2.5}
    text = dumps(obj)
    assert json.loads(text) == obj | {"v": [[float(f"{x:.9g}") for x in v] for v in vectors]}
    plain = {"a": [1, None, 'é\n"', {"b": True}], "n": 2.5}
    assert dumps(plain) == json.dumps(plain, separators=(",", ":"), ensure_ascii=False)
    assert dumps(RawJSON("[1]")) == "[1]"
