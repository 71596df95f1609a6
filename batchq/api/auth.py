"""API keys of ``batchq serve``'s OpenAI and Anthropic routes.

A request carries its key as ``Authorization: Bearer KEY``, as the ``openai`` client sends it;
on Anthropic's routes (``/v1/messages``) as ``x-api-key: KEY``, as the ``anthropic`` client
does (or as a bearer token, as it sends an ``auth_token``), refused in Anthropic's error shape.
Keys come from ``--api-key`` (repeatable) and ``BATCHQ_API_KEYS`` (comma-separated). Each is
compared in constant time (``hmac.compare_digest``), and against every configured key, so
neither the time taken nor which key matched tells a guesser anything.

Without any key the routes are open: fine on loopback, where only this machine's users reach
them (and the Host check keeps web pages out); beyond loopback ``serve`` refuses to start
without a key unless ``--no-auth`` says that is meant (:func:`check_exposure`).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from batchq.api.anthropic_objects import ANTHROPIC_PREFIX, anthropic_error_body
from batchq.api.openai_objects import error_body
from batchq.errors import ConfigError

__all__ = ["MAX_KEY_BYTES", "check_exposure", "key_middleware", "matches"]

# A bearer token longer than this is no key of ours; checked before comparing.
MAX_KEY_BYTES = 4096


def matches(given: str, keys: Iterable[bytes]) -> bool:
    """Whether ``given`` is one of ``keys``; every key is compared, in constant time."""
    raw = given.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_KEY_BYTES:
        return False
    found = False
    for key in keys:
        found |= hmac.compare_digest(raw, key)
    return found


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_middleware(keys: Iterable[str]) -> Middleware:
    """An aiohttp middleware answering 401 (in the error body of the API asked) to a request
    without one of ``keys``."""
    encoded = tuple(k.encode("utf-8", "surrogateescape") for k in keys)

    @web.middleware
    async def check_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(ANTHROPIC_PREFIX):
            return await anthropic_key(request, handler)
        token = _bearer(request.headers.get("Authorization"))
        if token is None or not matches(token, encoded):
            message = (
                "You didn't provide an API key: pass it as 'Authorization: Bearer KEY'."
                if token is None
                else "Incorrect API key provided."
            )
            body = error_body(message, "invalid_request_error", code="invalid_api_key")
            return web.json_response(
                body, status=401, headers={"WWW-Authenticate": 'Bearer realm="batchq"'}
            )
        return await handler(request)

    async def anthropic_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("x-api-key")
        token = given.strip() if given else _bearer(request.headers.get("Authorization"))
        if not token or not matches(token, encoded):
            message = "x-api-key header is required" if not token else "invalid x-api-key"
            body = anthropic_error_body(message, "authentication_error")
            return web.json_response(body, status=401)
        return await handler(request)

    return check_key


def check_exposure(*, loopback: bool, keys: list[str], no_auth: bool) -> None:
    """Refuse to serve the API beyond loopback without a key, unless ``no_auth``; and refuse
    ``no_auth`` with keys, which would leave unclear which one holds."""
    if no_auth and keys:
        raise ConfigError("--no-auth with API keys: give one or the other")
    if not loopback and not keys and not no_auth:
        raise ConfigError(
            "serve listens beyond loopback: give an API key (--api-key KEY or "
            "BATCHQ_API_KEYS) for its OpenAI API, or --no-auth to serve it to anyone who "
            "can reach this address"
        )
