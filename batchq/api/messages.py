"""The routes of Anthropic's Message Batches API: create, retrieve, list (``before_id``,
``after_id``, ``limit``), cancel, results (JSONL, streamed) and delete; and the middleware that
answers their refusals in Anthropic's error shape. The records behind them are
:mod:`batchq.api.message_batches`'s.

The body of a create is read as it arrives, bounded by ``BATCHQ_MAX_MESSAGE_BATCH_BYTES``
(Anthropic's own bound is 256 MB; batchq's default is larger), not by the app's
``client_max_size``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from batchq.api.anthropic_objects import (
    ANTHROPIC_PREFIX,
    AnthropicError,
    anthropic_error_body,
    batch_page,
    message_batch,
)
from batchq.api.message_batches import MAX_LIST, AnthropicBatches
from batchq.errors import BatchNotFound, InputError

__all__ = ["add_message_batch_routes", "anthropic_errors"]

# Lines of results gathered into one write.
_WRITE_BYTES = 1 << 16
# The longest wait for the next piece of a create's body: a client that stops sending must not
# hold a thread (and the staged requests) for ever.
_READ_TIMEOUT_S = 300.0


@web.middleware
async def anthropic_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal of Anthropic's routes in Anthropic's error body."""
    if not request.path.startswith(ANTHROPIC_PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except AnthropicError as e:
        return web.json_response(e.body(), status=e.status)
    except BatchNotFound as e:
        return web.json_response(anthropic_error_body(str(e), "not_found_error"), status=404)
    except InputError as e:
        return web.json_response(anthropic_error_body(str(e), "invalid_request_error"), status=400)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        message = f"{e.reason}: {request.method} {request.path:.200}"
        kinds = {404: "not_found_error", 405: "invalid_request_error"}
        kind = kinds.get(e.status, "invalid_request_error" if e.status < 500 else "api_error")
        return web.json_response(anthropic_error_body(message, kind), status=e.status)


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return 20
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIST:
        raise AnthropicError(400, f"limit: must be an integer from 1 to {MAX_LIST}")
    return value


def _body_reader(request: web.Request, limit: int) -> Callable[[int], bytes]:
    """A blocking ``read(n)`` of the request's body for a thread, with the loop doing the
    reading; 413 once more than ``limit`` bytes came."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    loop = asyncio.get_running_loop()
    received = 0

    def read(n: int) -> bytes:
        nonlocal received
        future = asyncio.run_coroutine_threadsafe(request.content.read(n), loop)
        try:
            data = future.result(timeout=_READ_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            raise AnthropicError(
                408, f"The request body stopped arriving for {_READ_TIMEOUT_S:.0f} s."
            ) from None
        received += len(data)
        if received > limit:
            raise _too_large(limit)
        return data

    return read


def _too_large(limit: int) -> AnthropicError:
    return AnthropicError(
        413,
        f"The request body is larger than {limit} bytes (BATCHQ_MAX_MESSAGE_BATCH_BYTES).",
        type="request_too_large",
    )


def add_message_batch_routes(
    router: web.UrlDispatcher, batches: AnthropicBatches, *, max_body_bytes: int
) -> None:
    def results_url(request: web.Request, batch_id: str) -> str:
        return f"{request.url.origin()}{ANTHROPIC_PREFIX}/batches/{batch_id}/results"

    async def show(request: web.Request, rec: dict[str, str]) -> dict[str, Any]:
        meta = await batches.meta(rec)
        return message_batch(rec, meta, results_url(request, rec["id"]))

    async def create(request: web.Request) -> web.Response:
        ctype = request.content_type
        if ctype not in ("application/json", "application/octet-stream", ""):
            raise AnthropicError(400, f"the body must be JSON, not {ctype:.80}")
        rec = await batches.create(_body_reader(request, max_body_bytes))
        return web.json_response(await show(request, rec))

    async def retrieve(request: web.Request) -> web.Response:
        rec = await batches.record(request.match_info["batch_id"])
        return web.json_response(await show(request, rec))

    async def listing(request: web.Request) -> web.Response:
        q = request.query
        recs, more = await batches.page(
            before=q.get("before_id") or None,
            after=q.get("after_id") or None,
            limit=_limit(request),
        )
        return web.json_response(batch_page([await show(request, r) for r in recs], more))

    async def cancel(request: web.Request) -> web.Response:
        rec = await batches.cancel(request.match_info["batch_id"])
        return web.json_response(await show(request, rec))

    async def results(request: web.Request) -> web.StreamResponse:
        lines = batches.results(request.match_info["batch_id"])
        first = await anext(lines, None)  # a refusal is an error before the headers
        response = web.StreamResponse(headers={"Content-Type": "application/x-jsonl"})
        await response.prepare(request)
        if first is not None:
            buf = [first, "\n"]
            size = len(first)
            async for line in lines:
                buf += (line, "\n")
                size += len(line)
                if size >= _WRITE_BYTES:
                    await response.write("".join(buf).encode())
                    buf, size = [], 0
            if buf:
                await response.write("".join(buf).encode())
        await response.write_eof()
        return response

    async def delete(request: web.Request) -> web.Response:
        batch_id = request.match_info["batch_id"]
        await batches.delete(batch_id)
        return web.json_response({"id": batch_id, "type": "message_batch_deleted"})

    prefix = ANTHROPIC_PREFIX.removeprefix("/v1")
    router.add_post(f"{prefix}/batches", create)
    router.add_get(f"{prefix}/batches", listing)
    router.add_get(f"{prefix}/batches/{{batch_id}}", retrieve)
    router.add_post(f"{prefix}/batches/{{batch_id}}/cancel", cancel)
    router.add_get(f"{prefix}/batches/{{batch_id}}/results", results)
    router.add_delete(f"{prefix}/batches/{{batch_id}}", delete)
