"""OpenAI's Files and Batches API and Anthropic's Message Batches under ``/v1`` of ``batchq
serve``'s web app.

The routes live in a sub-application: the API keys (:mod:`batchq.api.auth`) and the APIs' error
bodies apply to them alone, while the status page stays as it is; the Host check of the page's
app covers both. Anthropic's routes (``/v1/messages``) answer in Anthropic's error shape, the
others in OpenAI's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from batchq.api import webhooks
from batchq.api.auth import key_middleware
from batchq.api.batch_store import OpenAIBatches
from batchq.api.batches import add_batch_routes
from batchq.api.files import add_file_routes
from batchq.api.filestore import FileStore
from batchq.api.message_batches import AnthropicBatches
from batchq.api.messages import add_message_batch_routes, anthropic_errors
from batchq.api.openai_objects import ApiError, error_body
from batchq.errors import BatchNotFound, InputError
from batchq.settings import Settings
from batchq.store.batches import BatchStore

__all__ = ["api_app", "mount"]


@web.middleware
async def _openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal in OpenAI's error body, as its client expects to parse it."""
    try:
        return await handler(request)
    except ApiError as e:
        return web.json_response(e.body(), status=e.status)
    except BatchNotFound as e:
        return web.json_response(error_body(str(e), "invalid_request_error"), status=404)
    except InputError as e:
        body = error_body(e.reason, "invalid_request_error", param=e.field)
        return web.json_response(body, status=400)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        message = f"{e.reason}: {request.method} {request.path:.200}"
        kind = "invalid_request_error" if e.status < 500 else "server_error"
        return web.json_response(error_body(message, kind), status=e.status)


def api_app(store: BatchStore, settings: Settings, *, keys: list[str]) -> web.Application:
    """The ``/v1`` routes; ``keys``: the API keys accepted (none: no key asked)."""
    files = FileStore(store.redis, store.keys, settings.home / "files", settings.max_file_bytes)
    batches = OpenAIBatches(store, files, settings)
    # Outermost first: Anthropic's refusals are answered before OpenAI's middleware sees them.
    middlewares: list[Middleware] = [_openai_errors, anthropic_errors]
    if keys:
        middlewares.insert(0, key_middleware(keys))
    application = web.Application(middlewares=middlewares)
    add_file_routes(application.router, files)
    add_batch_routes(application.router, batches)
    add_message_batch_routes(
        application.router,
        AnthropicBatches(store, settings),
        max_body_bytes=settings.max_message_batch_bytes,
    )

    async def stop_writers(_: web.Application) -> None:
        await batches.close()

    application.on_cleanup.append(stop_writers)
    if settings.openai_webhook_url:
        _watch_for_webhooks(application, batches, settings)
    return application


def _watch_for_webhooks(
    application: web.Application, batches: OpenAIBatches, settings: Settings
) -> None:
    """Announce finished API batches (:mod:`batchq.api.webhooks`) while the app runs."""
    url = settings.openai_webhook_url or ""
    webhooks.check_url(url, allow_private=settings.notify_allow_private)

    async def refresh(batch_id: str) -> None:
        await batches.state(await batches.record(batch_id))

    async def run(_: web.Application) -> AsyncIterator[None]:
        stop = webhooks.start_watching(
            batches.redis, batches.keys, refresh, settings.openai_webhook_every
        )
        yield
        await stop()

    application.cleanup_ctx.append(run)


def mount(
    application: web.Application, store: BatchStore, settings: Settings, *, keys: list[str]
) -> None:
    """Add the API under ``/v1`` to ``application`` (``batchq serve``'s)."""
    application.add_subapp("/v1", api_app(store, settings, keys=keys))
