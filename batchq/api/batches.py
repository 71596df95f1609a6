"""The routes of OpenAI's Batches API: create, retrieve, list (``after``, ``limit``) and
cancel. The records behind them are :mod:`batchq.api.batch_store`'s."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from batchq.api.batch_store import MAX_LIST, OpenAIBatches
from batchq.api.openai_objects import ApiError, batch_object, list_page, query_int

__all__ = ["add_batch_routes", "json_body"]


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (bounded by the app's ``client_max_size``)."""
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def add_batch_routes(router: web.UrlDispatcher, batches: OpenAIBatches) -> None:
    async def show(rec: dict[str, str]) -> dict[str, Any]:
        return batch_object(rec, await batches.state(rec))

    async def create(request: web.Request) -> web.Response:
        rec = await batches.create(await json_body(request))
        return web.json_response(await show(rec))

    async def retrieve(request: web.Request) -> web.Response:
        rec = await batches.record(request.match_info["batch_id"])
        return web.json_response(await show(rec))

    async def listing(request: web.Request) -> web.Response:
        q = request.query
        recs, more = await batches.page(
            q.get("after") or None, query_int(q, "limit", 20, 1, MAX_LIST)
        )
        return web.json_response(list_page([await show(r) for r in recs], more))

    async def cancel(request: web.Request) -> web.Response:
        rec = await batches.cancel(request.match_info["batch_id"])
        return web.json_response(await show(rec))

    router.add_post("/batches", create)
    router.add_get("/batches", listing)
    router.add_get("/batches/{batch_id}", retrieve)
    router.add_post("/batches/{batch_id}/cancel", cancel)
