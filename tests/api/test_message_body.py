"""The body of a Message Batches create, read a piece at a time."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from batchq.api.message_body import iter_requests
from batchq.inputs.fields import Bad


def _read(body: str | bytes, piece: int) -> list[Any]:
    stream = io.BytesIO(body.encode() if isinstance(body, str) else body)
    return list(iter_requests(lambda n: stream.read(min(n, piece)), max_request_bytes=1000))


@pytest.mark.parametrize("piece", [1, 3, 1 << 16])
def test_requests_come_one_at_a_time_whatever_the_pieces(piece: int) -> None:
    requests = [{"custom_id": "é-0", "n": 12345}, 67890, "text", [1, [2]], {"x": 1.5e3}]
    body = json.dumps({"requests": requests}, ensure_ascii=False, indent=1)
    assert _read(body, piece) == requests
    assert _read(' { "requests" : [ ] } ', piece) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{}", "requests"),
        ('{"x": 1}', "x"),
        ('{"requests": [], "requests": []}', "requests"),
        ('{"requests": [{"a": 1} {"b": 2}]}', "requests[0]"),
        ('{"requests": [{"a": 1,}]}', "requests[0]"),
        ('{"requests": [{"a": 1, "a": 2}]}', "requests[0]"),
        ('{"requests": [NaN]}', "requests[0]"),
        ('{"requests": [1e999]}', "requests[0]"),
        ('{"requests": [1, "' + "y" * 2000 + '"]}', "requests[1]"),
        ('{"requests": [' + "[" * 70 + "]" * 70 + "]}", "requests[0][0][0][0][0]…"),
        ('{"requests": [1]} x', None),
        ('{"requests": [1', "requests[0]"),
        ("[1]", None),
        ("", None),
    ],
)
def test_a_bad_body_names_where(body: str, field: str | None) -> None:
    with pytest.raises(Bad) as err:
        _read(body, 7)
    assert err.value.field == field


def test_a_body_not_utf8_is_refused() -> None:
    with pytest.raises(Bad, match="UTF-8"):
        _read(b'{"requests": ["\xff"]}', 4)
