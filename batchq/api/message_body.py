"""The body of ``POST /v1/messages/batches`` (``{"requests": [...]}``), read as it arrives: one
request decoded at a time, never the whole body, so that a body of a million requests takes
the memory of one.

The outer object and array are walked by hand; each value inside is decoded by batchq's strict
JSON decoder (:data:`~batchq.inputs.fields.DECODER`: no duplicate keys, no NaN), bounded by
``max_value_bytes``. Errors raise :class:`~batchq.inputs.fields.Bad` naming where
(``requests[3]``).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator
from typing import Any

from batchq.inputs.fields import DECODER, Bad, check_depth
from batchq.records import MAX_JSON_DEPTH, may_nest_deeper

__all__ = ["iter_requests"]

_CHUNK = 1 << 16
_WS = " \t\n\r"


class _Text:
    """The body as text, decoded as it is read; what was consumed is dropped."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.pos = 0
        self.eof = False

    def more(self, at_least: int = _CHUNK) -> bool:
        """Read on (at least ``at_least`` bytes, unless the body ends); False at its end."""
        if self.eof:
            return False
        if self.pos:
            self.buf, self.pos = self.buf[self.pos :], 0
        try:
            data = self._read(max(at_least, _CHUNK))
            self.buf += self._decoder.decode(data, final=not data)
        except UnicodeDecodeError:
            raise Bad("the body is not UTF-8") from None
        if not data:
            self.eof = True
        return True

    def peek(self) -> str:
        """The next character that is not whitespace ('' at the end), not consumed."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def expect(self, char: str, where: str | None) -> None:
        if self.peek() != char:
            raise Bad(f"expected {char!r} in the JSON body", where)
        self.pos += 1

    def value(self, limit: int, where: str | None) -> Any:
        """The JSON value that starts here."""
        self.peek()
        while True:
            start = self.pos
            try:
                value, end = DECODER.raw_decode(self.buf, start)
            except json.JSONDecodeError as e:
                # Most often the value goes on in what is not read yet.
                cut = e.pos >= len(self.buf) - 1 or e.msg.startswith("Unterminated")
                if cut and self._room(start, limit, where):
                    continue
                raise Bad(f"not valid JSON: {e.msg}", where) from None
            except RecursionError:
                raise Bad(f"nested deeper than {MAX_JSON_DEPTH} levels", where) from None
            except ValueError as e:  # a duplicate key, a number out of range
                raise Bad(str(e), where) from None
            # A number may go on past the buffer: a value counts once something follows it.
            if end < len(self.buf) or self.eof:
                self.pos = end
                if may_nest_deeper(self.buf[start:end], MAX_JSON_DEPTH):
                    check_depth(value, where or "")
                return value
            self._room(start, limit, where)

    def _room(self, start: int, limit: int, where: str | None) -> bool:
        """Read more of the value from ``start``, doubling what is held (so a long value is
        decoded a few times, not once a chunk); False at the body's end."""
        if len(self.buf) - start > limit:
            raise Bad(f"larger than {limit} bytes", where)
        return self.more(at_least=len(self.buf) - start)


def iter_requests(read: Callable[[int], bytes], *, max_request_bytes: int) -> Iterator[Any]:
    """The entries of ``requests`` of the body ``read`` gives, in order, each decoded JSON. The
    body's other keys are refused (Anthropic's body has no other); ``requests`` must be there
    once."""
    text = _Text(read)
    text.expect("{", None)
    seen = False
    if text.peek() == "}":
        raise Bad("required", "requests")
    while True:
        key = text.value(1024, None)
        if not isinstance(key, str):
            raise Bad("expected a key in the JSON body", None)
        text.expect(":", key)
        if key != "requests":
            raise Bad("unknown field (the body has requests)", key[:80])
        if seen:
            raise Bad("given twice", "requests")
        seen = True
        text.expect("[", "requests")
        if text.peek() == "]":
            text.pos += 1
        else:
            index = 0
            while True:
                yield text.value(max_request_bytes, f"requests[{index}]")
                index += 1
                after = text.peek()
                text.pos += 1
                if after == "]":
                    break
                if after != ",":
                    raise Bad("expected ',' or ']' after a request", f"requests[{index - 1}]")
        after = text.peek()
        text.pos += 1
        if after == "}":
            break
        if after != ",":
            raise Bad("expected ',' or '}' in the JSON body", None)
    if text.peek() != "":
        raise Bad("data after the JSON body", None)
