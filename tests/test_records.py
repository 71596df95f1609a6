"""Records: the nesting bound that submit checks and a worker's decoding of a stored item
checks again, whatever the depth."""

from __future__ import annotations

import json

import pytest

from batchq.records import MAX_JSON_DEPTH, Endpoint, Item, deeper_than, may_nest_deeper


def nested(levels: int, leaf: object = 1) -> object:
    """``levels`` objects and arrays, alternating, around ``leaf``."""
    value = leaf
    for n in range(levels):
        value = {"k": value} if n % 2 else [value]
    return value


def test_deeper_than_names_the_path_to_the_first_level_too_many() -> None:
    assert deeper_than({"a": [1, {"b": "[[[{{{"}]}, 3) is None  # brackets in a string are text
    assert deeper_than({"a": [1, {"b": [[]]}]}, 3) == ("a", 1, "b")
    assert deeper_than([[[]]], 1) == (0,)
    assert deeper_than({}, 0) == ()
    for scalar in (1, "x", None, 2.5, True):
        assert deeper_than(scalar, 0) is None
    assert deeper_than(nested(10_000), 9_999) is not None  # no recursion, any depth
    assert deeper_than(nested(10_000), 10_000) is None


def test_may_nest_deeper_counts_the_brackets() -> None:
    assert not may_nest_deeper('{"a": [1, 2]}', 2)
    assert may_nest_deeper('{"a": [[1], 2]}', 2)
    assert may_nest_deeper(b'{"a": "[["}', 2)  # strings count: an upper bound, cheaply


def test_a_stored_item_as_deep_as_submit_allows_decodes_and_one_deeper_does_not() -> None:
    # The line's object is level 1; the body holds its fields at the same levels.
    deepest = Item("x", Endpoint.GENERATE, {"model": "m", "format": nested(MAX_JSON_DEPTH - 1)})
    assert deeper_than(deepest.body, MAX_JSON_DEPTH) is None
    assert Item.loads(deepest.dumps(), checked=True) == deepest
    assert Item.loads(deepest.dumps().encode(), checked=True) == deepest
    deeper = Item("x", Endpoint.GENERATE, {"model": "m", "format": nested(MAX_JSON_DEPTH)})
    with pytest.raises(ValueError, match="nested deeper than 64 levels"):
        Item.loads(deeper.dumps(), checked=True)
    assert Item.loads(deeper.dumps()) == deeper  # readers of results decode what is there
    for levels in (975, 100_000):  # past Python's recursion limit: no RecursionError either
        raw = json.dumps({"c": "x", "e": "generate", "b": {"model": "m"}})[:-2]
        raw += ',"format":' + "[" * levels + "]" * levels + "}}"
        with pytest.raises(ValueError, match="nested deeper than 64 levels"):
            Item.loads(raw.encode(), checked=True)
