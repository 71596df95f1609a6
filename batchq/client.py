"""The Python API: what the ``batchq`` commands do, as typed methods.

:class:`BatchClient` is asynchronous; :class:`~batchq.sync_client.SyncBatchClient` is its
blocking twin, method for method, for scripts and notebooks::

    async with BatchClient() as client:
        batch = await client.submit(["Why is the sky blue?"], model="llama3.2")
        async for result in client.as_completed(batch.batch_id):
            print(result.custom_id, result.status, result.response)

Both take the settings the commands take (``BATCHQ_*`` variables, or a :class:`Settings`) and
reach Redis the same way: the configured URL, else the embedded server. Errors are the
commands' too: :class:`InputError` naming the line and field, :class:`BatchNotFound`,
:class:`RedisUnavailable`, :class:`ConfigError`.

New operations on a batch are one more method on each class: the async one calls
:class:`BatchStore` inside ``self._errors()``, the sync one wraps it in ``self._run``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import IO, TypedDict, TypeVar, Unpack

from redis.exceptions import RedisError

from batchq import clock
from batchq.errors import ConfigError
from batchq.inputs.native import InputFormat
from batchq.inputs.sources import Source, submit_source
from batchq.options import SubmitArgs, SubmitOptions
from batchq.records import BatchStatus, ItemInfo, ItemResult, ItemStatus
from batchq.results.completed import completed_pages
from batchq.results.export import (
    OnDone,
    OutputFormat,
    iter_results,
    wait_finished,
    write_output,
)
from batchq.results.export import export_results as export_stream
from batchq.settings import Settings, build_settings
from batchq.store.batches import BatchStore
from batchq.store.connection import connect, redis_errors, redis_unavailable, resolve_redis_url
from batchq.store.items import item_info, retry_items
from batchq.store.keys import Keys

__all__ = ["PAGE_SIZE", "BatchClient", "ExportArgs", "Output", "ProgressCallback"]

T = TypeVar("T")

ProgressCallback = Callable[[BatchStatus], object]
Output = str | os.PathLike[str] | IO[str]


class ExportArgs(TypedDict, total=False):
    """How :meth:`BatchClient.write_results` writes: ``wait`` (default False) until the batch
    is finished; ``fmt`` ``"native"`` (default) or ``"openai"``; ``errors``, where the failed,
    cancelled and expired items go instead (default: with the others)."""

    wait: bool
    fmt: OutputFormat
    errors: Output | None


# Results per page of an iterator, as read from Redis in one chunk.
PAGE_SIZE = 1000


class BatchClient:
    """Submit batches, follow them, read their results: asynchronously, on one event loop.

    ``settings`` defaults to the environment's; ``redis_url`` and ``prefix`` override it. The
    connection opens on first use (or on ``async with`` / :meth:`connect`, which also checks
    that Redis answers) and closes with :meth:`close`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redis_url: str | None = None,
        prefix: str | None = None,
    ) -> None:
        self._settings = build_settings(settings, redis_url=redis_url, prefix=prefix)
        self._store: BatchStore | None = None
        self._url: str | None = None
        self._closed = False

    async def __aenter__(self) -> BatchClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        await self.close()

    async def connect(self) -> BatchStore:
        """Connect if not yet connected (starting the embedded server if that is the one
        configured), and check that Redis answers."""
        if self._closed:
            raise RuntimeError("this BatchClient is closed")
        if self._store is not None:
            return self._store
        # Starting the embedded server waits on a process: not on the event loop.
        url = await asyncio.to_thread(resolve_redis_url, self.settings)
        redis = connect(url, retries=2)
        try:
            # TIME, not PING: it checks that Redis answers and sets the clock every timestamp
            # of this process is read from (see batchq.clock).
            await clock.sync(redis)
        except (RedisError, OSError) as e:
            await redis.aclose()
            raise redis_unavailable(url, e) from None
        except BaseException:
            await redis.aclose()
            raise
        if self._store is not None:  # another task connected meanwhile
            await redis.aclose()
            return self._store
        self._store, self._url = BatchStore(redis, Keys(self.settings.prefix)), url
        return self._store

    async def close(self) -> None:
        """Close the connection; the client cannot be used afterwards."""
        self._closed = True
        store, self._store = self._store, None
        if store is not None:
            await store.redis.aclose()

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def store(self) -> BatchStore:
        """The connected :class:`BatchStore`, for what this API does not cover."""
        if self._store is None:
            raise RuntimeError("not connected: use `async with BatchClient()` or `await connect()`")
        return self._store

    @property
    def redis_url(self) -> str | None:
        """The Redis URL in use once connected (the embedded server's, if none is set)."""
        return self._url

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        with redis_errors(self._url or ""):
            yield

    async def _on_store(self, op: Callable[[BatchStore], Awaitable[T]]) -> T:
        """``op`` on the connected store, a Redis fault becoming one readable error."""
        store = await self.connect()
        with self._errors():
            return await op(store)

    # -- the commands ---------------------------------------------------------------------------

    async def submit(
        self,
        items: Source,
        *,
        model: str | None = None,
        format: InputFormat | None = None,
        **options: Unpack[SubmitArgs],
    ) -> BatchStatus:
        """Validate and queue a batch, as ``batchq submit`` does; nothing is queued if any item
        is bad (:class:`InputError` naming the line, counting from 1, and the field).

        ``items``: a path (``str`` or ``PathLike``) to a JSONL or ``.txt`` file, an open binary
        stream, or an iterable of prompts (``str``), line objects (dicts of any shape a JSONL
        line may have) and :class:`Item`\\ s, consumed lazily. ``model`` fills in items without
        one; ``name`` labels the batch (a file's name by default); ``format`` (``"jsonl"`` or
        ``"txt"``) overrides what a file's extension implies.

        ``metadata`` (``--meta``): up to 16 string pairs shown with the batch. ``deadline``
        (``--deadline``): items not started by then expire; ``"90m"``, an ISO 8601 time, a
        ``timedelta`` or a ``datetime`` (local time if naive). ``notify`` (``--notify``): an
        http(s) URL the final status is POSTed to. ``priority`` (``--priority``, an integer):
        batches of a higher priority are dispatched first; ``weight`` (``--weight``, positive):
        the batch's share among batches of its priority. All are checked before any item is
        read, as the command checks them (:class:`InputError` naming the field); see
        :class:`batchq.options.SubmitOptions`.
        """
        # Checked before connecting, so a typo does not wait on Redis; then made again to read
        # a relative deadline from the server's clock, which connect() measured.
        SubmitOptions(**options).check_target(allow_private=self.settings.notify_allow_private)
        store = await self.connect()
        checked = SubmitOptions(**options)
        with self._errors():
            batch_id, _ = await submit_source(
                store, items, settings=self.settings, model=model, fmt=format, options=checked
            )
            return await store.status(batch_id)

    async def status(self, batch_id: str) -> BatchStatus:
        """The batch's counts and state (``batchq status``); read from counters: instant."""
        return await self._on_store(lambda store: store.status(batch_id))

    async def list(self, limit: int = 50) -> builtins.list[BatchStatus]:
        """Recent batches, newest first (``batchq list``)."""
        return await self._on_store(lambda store: store.recent(limit=limit))

    async def results(self, batch_id: str) -> AsyncIterator[ItemResult]:
        """The results so far, in input order (``batchq results``); items not yet final are
        skipped. Call :meth:`wait` first for all of them."""
        store = await self.connect()
        with self._errors():
            async for result in iter_results(store, batch_id):
                yield result

    async def as_completed(self, batch_id: str, *, poll: float = 0.5) -> AsyncIterator[ItemResult]:
        """Every result of the batch once, as it finishes (not in input order), checking every
        ``poll`` seconds; ends when the batch is finished. Each check costs about the items in
        flight, not the batch: see :mod:`batchq.results.completed`."""
        async for page in self._completed_pages(batch_id, poll):
            for result in page:
                yield result

    async def _completed_pages(
        self, batch_id: str, poll: float
    ) -> AsyncIterator[builtins.list[ItemResult]]:
        store = await self.connect()
        with self._errors():
            async for page in completed_pages(store, batch_id, poll=poll, chunk=PAGE_SIZE):
                yield page

    async def wait(
        self,
        batch_id: str,
        *,
        # The same signature as SyncBatchClient.wait; asyncio.timeout() around it works too.
        timeout: float | None = None,  # noqa: ASYNC109
        on_progress: ProgressCallback | None = None,
        poll: float = 0.5,
        on_done: OnDone | None = None,
    ) -> BatchStatus:
        """Wait until every item is final and return the final status; ``TimeoutError`` after
        ``timeout`` seconds. ``on_progress`` is called with the first status and each one that
        differs from the last (the final one included); ``on_done`` (a function or coroutine
        function) with the final status, before it is returned, and not on a timeout."""
        store = await self.connect()
        with self._errors():
            return await wait_finished(
                store,
                batch_id,
                interval=poll,
                max_wait=timeout,
                on_progress=on_progress,
                on_done=on_done,
            )

    async def cancel(self, batch_id: str) -> BatchStatus:
        """Items not yet sent become cancelled; running ones finish (``batchq cancel``)."""
        return await self._on_store(lambda store: store.cancel(batch_id))

    async def repair(self, batch_id: str) -> int:
        """Queue lost items again (``batchq repair``); returns how many were found."""
        return await self._on_store(lambda store: store.repair(batch_id))

    async def pause(self, batch_id: str) -> BatchStatus:
        """Send nothing more of the batch until :meth:`resume` (``batchq pause``); requests
        already at Ollama finish. :class:`BatchStateError` if it is already final."""
        return await self._on_store(lambda store: store.pause(batch_id))

    async def resume(self, batch_id: str) -> BatchStatus:
        """Dispatch a paused batch again, from where it stopped (``batchq resume``)."""
        return await self._on_store(lambda store: store.resume(batch_id))

    async def retry(
        self,
        batch_id: str,
        *,
        failed: bool | None = None,
        expired: bool = False,
        ids: Sequence[str] | None = None,
    ) -> int:
        """Run final items again under the same batch id (``batchq retry``): the failed ones
        (``failed``; the default unless ``ids`` are given), the expired ones (``expired``),
        and the items with these custom ``ids`` whatever their status. Returns how many run
        again. Each one's new result replaces its old one; :meth:`as_completed` yields it
        again. Every id is checked first: an unknown one (:class:`ItemNotFound`), nothing
        retried. :class:`BatchStateError` for a cancelled batch."""
        if isinstance(ids, str):
            raise TypeError("ids is a list of custom ids, not one string")
        if failed is None:
            failed = not ids
        statuses = [ItemStatus.FAILED] if failed else []
        statuses += [ItemStatus.EXPIRED] if expired else []
        if not statuses and not ids:
            raise ConfigError("say which items to run again: failed, expired and/or ids")
        return await self._on_store(
            lambda store: retry_items(store, batch_id, statuses=statuses, custom_ids=ids or ())
        )

    async def item(self, batch_id: str, custom_id: str) -> ItemInfo:
        """One item's state, attempts, error history and result, by its custom id (its index
        as a string if it set none), while the batch runs too (``batchq item``)."""
        return await self._on_store(lambda store: item_info(store, batch_id, custom_id))

    async def write_results(
        self,
        batch_id: str,
        path: Output,
        **how: Unpack[ExportArgs],
    ) -> int:
        """Write the results so far in input order as JSONL (``batchq results -o``), to a path
        (written aside, then renamed: a reader never sees half a file) or a text stream; with
        ``wait``, once the batch is finished. ``fmt="openai"`` writes OpenAI Batch API output
        lines; ``errors`` takes the failed, cancelled and expired items instead (OpenAI's error
        file). Returns the lines written, both files together."""
        ok, failed = await self.export_results(batch_id, path, **how)
        return ok + failed

    async def export_results(
        self,
        batch_id: str,
        path: Output,
        **how: Unpack[ExportArgs],
    ) -> tuple[int, int]:
        """:meth:`write_results`, counted apart: (lines of succeeded items, lines of the
        others)."""
        fmt, errors = how.get("fmt", "native"), how.get("errors")
        store = await self.connect()
        with self._errors():
            await store.meta(batch_id)  # an unknown id: one clear error before waiting
            if how.get("wait"):
                await wait_finished(store, batch_id)
            if not isinstance(path, str | os.PathLike):
                if isinstance(errors, str | os.PathLike):
                    raise TypeError("errors is a stream when the output is one")
                return await export_stream(store, batch_id, path, fmt=fmt, errors=errors)
            if errors is not None and not isinstance(errors, str | os.PathLike):
                raise TypeError("errors is a path when the output is one")
            try:
                return await write_output(
                    store,
                    batch_id,
                    os.fspath(path),
                    fmt=fmt,
                    errors=None if errors is None else os.fspath(errors),
                )
            except OSError as e:
                if e.filename is None:  # not the file: the connection
                    raise
                raise ConfigError(f"cannot write {e.filename}: {e.strerror}") from None
