"""Submit options: metadata pairs."""

from __future__ import annotations

import pytest

from batchq.errors import InputError
from batchq.options import check_metadata, parse_meta_pairs


def test_meta_pairs_parse_in_order() -> None:
    got = parse_meta_pairs(["team=nlp", "run=7", "note=a=b", "empty="])
    assert got == {"team": "nlp", "run": "7", "note": "a=b", "empty": ""}
    assert list(got) == ["team", "run", "note", "empty"]


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["novalue"], "'novalue' is not KEY=VALUE"),
        (["=x"], "a key is empty"),
        (["a=1", "a=2"], "key 'a' is given twice"),
        ([f"k{i}=v" for i in range(17)], "at most 16 pairs, got 17"),
        (["k" * 65 + "=v"], "longer than 64 characters (65)"),
        (["k=" + "v" * 513], "value of 'k' is longer than 512 characters (513)"),
    ],
)
def test_bad_meta_is_a_clear_error(pairs: list[str], message: str) -> None:
    with pytest.raises(InputError, match="field 'metadata'") as e:
        parse_meta_pairs(pairs)
    assert message in str(e.value)
    assert e.value.field == "metadata"


def test_limits_are_inclusive() -> None:
    full = {f"k{i:02}" + "x" * 60: "v" * 512 for i in range(16)}
    assert check_metadata(full) == full
    with pytest.raises(InputError, match="strings"):
        check_metadata({"k": 5})  # type: ignore[dict-item]
