"""What a batch is made of: a file, a binary stream, or Python values — turned into items by
the one parser of :mod:`batchq.inputs.native`, so every source meets exactly the checks
``batchq submit`` applies to a file.

Python values become the lines of a virtual JSONL file (:class:`ValueLines`): a string is a
prompt, a mapping is a line's object (native or OpenAI batch), an :class:`Item` is its native
line. The file is never built: lines are encoded one at a time as the parser asks for them, so
a generator of a million prompts is validated and stored without being held in memory. An
error names the value as ``line N``, N counting from 1.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from batchq.errors import ConfigError, InputError
from batchq.inputs.native import InputFormat, detect_format, iter_items
from batchq.options import SubmitOptions
from batchq.records import MAX_JSON_DEPTH, Endpoint, Item
from batchq.settings import Settings
from batchq.store.batches import BatchStore

__all__ = ["Source", "ValueLines", "open_input", "source_items", "submit_source"]

# A path (str or os.PathLike; "-" is standard input, as on the command line), an open binary
# stream, or an iterable of prompts (str), line objects (mappings) and Items.
Source = str | os.PathLike[str] | IO[bytes] | Iterable[str | Mapping[str, Any] | Item]


@contextlib.contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """The file at ``path`` (``-``: standard input) for reading, or a ConfigError saying why
    not."""
    if path == "-":
        if sys.stdin is None:  # started with it closed (`<&-`)
            raise ConfigError("cannot read standard input (-): it is closed")
        yield sys.stdin.buffer
        return
    try:
        f = cast(BinaryIO, open(path, "rb"))  # noqa: SIM115 - closed below
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    with f:
        yield f


class ValueLines:
    """Python values read as the lines of a JSONL file, one encoded per :meth:`readline`.

    ``endpoints`` receives, per line, the endpoint an :class:`Item` declared (None for other
    values), for :func:`_checked_items` to compare with the endpoint its body implies.
    """

    def __init__(self, values: Iterable[object]) -> None:
        self._values = iter(values)
        self._line = 0
        self._rest = b""
        self.endpoints: collections.deque[Endpoint | None] = collections.deque()

    def readline(self, size: int = -1) -> bytes:
        if not self._rest:
            try:
                value = next(self._values)
            except StopIteration:
                return b""
            self._line += 1
            self._rest = self._encode(value)
        if 0 <= size < len(self._rest):
            # The parser asks for one byte over its limit to see an over-long line; the rest
            # of this value is never read.
            line, self._rest = self._rest[:size], self._rest[size:]
            return line
        line, self._rest = self._rest, b""
        return line

    def _encode(self, value: object) -> bytes:
        declared = None
        if isinstance(value, Item):
            declared = value.endpoint
            value = {"custom_id": value.custom_id, **value.body}
        elif isinstance(value, Mapping):
            value = dict(value)
        self.endpoints.append(declared)
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:  # a set, an object, NaN: nothing a file can hold
            raise InputError(f"not JSON: {e}", line=self._line) from None
        except RecursionError:
            raise InputError(
                f"nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects", line=self._line
            ) from None
        try:
            return text.encode() + b"\n"
        except UnicodeEncodeError:
            # A lone surrogate: escaped, the parser rejects it with its own message.
            return json.dumps(value, allow_nan=False).encode() + b"\n"


def _checked_items(items: Iterator[Item], lines: ValueLines) -> Iterator[Item]:
    for line, item in enumerate(items, 1):
        declared = lines.endpoints.popleft()
        if declared is not None and declared is not item.endpoint:
            raise InputError(
                f"the Item says {declared.value}, but its body is for /api/{item.endpoint.value}",
                line=line,
                field="endpoint",
            )
        yield item


@contextlib.contextmanager
def source_items(
    source: Source,
    *,
    model: str | None = None,
    fmt: InputFormat | None = None,
    max_line_bytes: int = 8 << 20,
) -> Iterator[Iterator[Item]]:
    """The validated items of ``source``, lazily; an open file is closed on leaving.

    ``model`` fills in items that name none (``--model``); ``fmt`` overrides the format a
    path's extension implies, or that of a stream (JSONL by default).
    """
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        with open_input(path) as stream:
            yield iter_items(
                stream,
                fmt=fmt or detect_format(path),
                default_model=model,
                max_line_bytes=max_line_bytes,
            )
        return
    if isinstance(source, io.TextIOBase):
        raise TypeError("a text stream: open the file in binary mode ('rb'), or pass its path")
    if isinstance(source, io.IOBase):
        stream = cast(BinaryIO, source)
        yield iter_items(
            stream, fmt=fmt or "jsonl", default_model=model, max_line_bytes=max_line_bytes
        )
        return
    if isinstance(source, bytes | bytearray | Mapping | Item):
        raise TypeError(
            f"submit takes a path, a binary stream or an iterable of items, not one "
            f"{type(source).__name__}: wrap a single item in a list"
        )
    if fmt is not None:
        raise ValueError("format applies to files and streams; Python values are their own")
    lines = ValueLines(cast(Iterable[object], source))
    parsed = iter_items(
        cast(BinaryIO, lines), fmt="jsonl", default_model=model, max_line_bytes=max_line_bytes
    )
    yield _checked_items(parsed, lines)


async def submit_source(
    store: BatchStore,
    source: Source,
    *,
    settings: Settings,
    model: str | None = None,
    fmt: InputFormat | None = None,
    options: SubmitOptions | None = None,
) -> tuple[str, int]:
    """Validate ``source`` while storing it as a batch; returns (batch id, items). A file's
    batch is named after the file unless ``options`` name it. Nothing is enqueued if any item
    is bad. ``options`` are :meth:`BatchStore.submit`'s."""
    opts = options or SubmitOptions()
    if opts.name is None and isinstance(source, str | os.PathLike) and os.fspath(source) != "-":
        opts = opts.named(Path(source).name)
    with source_items(
        source, model=model, fmt=fmt, max_line_bytes=settings.max_line_bytes
    ) as items:
        return await store.submit(
            items, opts, chunk=settings.submit_chunk, staging_ttl=settings.staging_ttl
        )
