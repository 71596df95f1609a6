"""The Ollama client, batchq's one :class:`~batchq.backends.base.Backend`: one request per item
to Ollama's native API, streamed or not, and every way it can fail mapped to a transient or
permanent :class:`~batchq.errors.BackendError` in one place.

Built on aiohttp rather than httpx: against the zero-latency simulator, httpx spent 2.1 to 2.7 ms
of CPU per streamed request and aiohttp 0.25 to 0.28 ms (``bench/clients.py``), and on a small
machine that CPU is what caps a worker's throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from batchq import clock
from batchq.backends.base import FIRST_TOKEN_FIELD, LoadedModel, Reply, ReplyLimits
from batchq.backends.bounds import (
    cap_error,
    clamp_metrics,
    deadline_passed,
    drain,
    lines,
    read_at_most,
    read_body,
    text_too_long,
)
from batchq.errors import BackendError, PermanentBackendError, TransientBackendError
from batchq.records import Endpoint, Item
from batchq.vectors import pack

__all__ = [
    "METRIC_FIELDS",
    "PATHS",
    "OllamaClient",
    "classify_status",
]

# Where Ollama takes each kind of request.
PATHS = {e: f"/api/{e.value}" for e in Endpoint}

METRIC_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
    "done_reason",
)


def classify_status(status: int, message: str) -> BackendError:
    """The one place that decides what is worth retrying."""
    if status == 404:
        return PermanentBackendError(message, kind="model_not_found", status_code=status)
    if status == 429:
        return TransientBackendError(message, kind="rate_limited", status_code=status)
    if status == 503:
        return TransientBackendError(message, kind="server_busy", status_code=status)
    if status >= 500:
        return TransientBackendError(message, kind="server_error", status_code=status)
    if status == 408:
        return TransientBackendError(message, kind="timeout", status_code=status)
    return PermanentBackendError(message, kind="invalid_request", status_code=status)


# Of an error reply, only this much is read: the text kept is a few KB (bounds.cap_error).
_ERROR_BODY_BYTES = 64 << 10
# A GET's reply (/api/version, /api/ps) is a few KB at most.
_GET_BODY_BYTES = 1 << 20
_ERROR_START = re.compile(rb'^\s*\{\s*"error"\s*:\s*"')


def _error_text(body: bytes | bytearray, cut: bool = False) -> str:
    """What a server's error reply says, capped; ``cut``: only the start of it was read."""
    if cut:
        # Not JSON any more: the text of {"error": "..."} without its opening, as it came.
        start = _ERROR_START.match(body)
        return cap_error(body[start.end() if start else 0 :].decode("utf-8", "replace"))
    try:
        d = json.loads(body)
    except ValueError:
        return cap_error(body.decode("utf-8", "replace").strip()[:500] or "(empty body)")
    if isinstance(d, dict):
        err = d.get("error")
        if isinstance(err, dict):  # the OpenAI-compatible shape
            return cap_error(str(err.get("message", err)))
        if err is not None:
            return cap_error(str(err))
    return json.dumps(d)[:500]


async def _status_error(r: aiohttp.ClientResponse) -> BackendError:
    body, cut = await read_at_most(r.content, _ERROR_BODY_BYTES)
    return classify_status(r.status, _error_text(body, cut))


def _transport_error(e: Exception, base_url: str) -> TransientBackendError:
    """What a failure below HTTP says: only a failed connect proves nothing reached Ollama."""
    if isinstance(e, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        # Ollama is down or unreachable, which says nothing about the item (the worker does
        # not count it as an attempt).
        return TransientBackendError(
            f"cannot reach Ollama at {base_url}: {type(e).__name__}: {e}", kind="unreachable"
        )
    if isinstance(e, TimeoutError):
        return TransientBackendError(f"request timed out ({type(e).__name__})", kind="timeout")
    return TransientBackendError(
        f"connection error: {type(e).__name__}: {e}", kind="connection_error"
    )


class OllamaClient:
    """One per worker process and host. The HTTP session opens on first use, inside the
    event loop that uses it."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        limits: ReplyLimits | None = None,
        stream: bool = True,
        max_connections: int = 100,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.stream = stream
        self.timeout = timeout
        self.limits = limits or ReplyLimits.defaults()
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                self.base_url,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                # Generations take minutes: the read timeout is per chunk when streaming, and
                # the whole request is bounded by the reply deadline (send).
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self._connect_timeout, sock_read=self.timeout
                ),
                # Proxies from the environment would be a surprise for a local Ollama; httpx's
                # default read them, and batchq never relied on it.
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> OllamaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def version(self) -> str:
        """Ollama's version; raises TransientBackendError when it cannot be reached."""
        return str(json.loads(await self._get("/api/version")).get("version", "?"))

    async def loaded_models(self) -> list[LoadedModel]:
        """``GET /api/ps``: the models in memory, in Ollama's order (latest to expire first)."""
        try:
            entries = json.loads(await self._get("/api/ps"))["models"]
            return [_loaded_model(m) for m in entries]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise TransientBackendError(
                f"/api/ps reply is not a list of models: {type(e).__name__}: {e}",
                kind="invalid_response",
            ) from None

    async def _get(self, path: str) -> bytes:
        """The body of a short GET that answered 200."""
        try:
            async with self.session.get(path, timeout=aiohttp.ClientTimeout(total=5.0)) as r:
                if r.status != 200:
                    raise await _status_error(r)
                body, cut = await read_at_most(r.content, _GET_BODY_BYTES)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TransientBackendError(
                f"cannot reach Ollama at {self.base_url}: {type(e).__name__}: {e}",
                kind="connection_error",
            ) from e
        if cut:
            raise TransientBackendError(f"{path} reply is over 1 MiB", kind="invalid_response")
        return bytes(body)

    async def send(self, item: Item) -> Reply:
        """The reply, within the deadline: leaving ``async with`` on any failure, a breach
        included, closes a connection whose body was not read to its end."""
        deadline = asyncio.timeout(self.limits.deadline)
        try:
            async with deadline:
                return await self._send(item)
        except TimeoutError:
            if deadline.expired():
                raise deadline_passed(self.limits.deadline) from None
            raise

    async def _send(self, item: Item) -> Reply:
        body = dict(item.body)
        embed = item.endpoint is Endpoint.EMBED
        stream = self.stream and not embed
        if not embed:  # /api/embed answers in one piece and takes no stream field
            body["stream"] = stream
        limits = self.limits
        try:
            sent = clock.monotonic()
            async with self.session.post(PATHS[item.endpoint], json=body) as r:
                if r.status != 200:
                    raise await _status_error(r)
                if stream:
                    got = await _read_stream(item.endpoint, r.content, limits)
                else:
                    got = _plain(item.endpoint, await read_body(r, limits.max_body_bytes), limits)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise _transport_error(e, self.base_url) from e
        if embed:
            return _embed_reply(got.final, len(body["input"]))
        reply = got.reply(item.endpoint)
        if got.first_token is not None:
            reply.metrics[FIRST_TOKEN_FIELD] = round((got.first_token - sent) * 1e9)
        return reply


def _loaded_model(d: dict[str, Any]) -> LoadedModel:
    def count(key: str) -> int | None:
        v = d.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    expires = d.get("expires_at")
    try:
        expires_at = datetime.fromisoformat(expires) if isinstance(expires, str) else None
    except ValueError:
        expires_at = None  # a stamp this Python cannot read says nothing worth failing for
    return LoadedModel(
        name=str(d.get("name") or d["model"]),
        size=count("size"),
        size_vram=count("size_vram"),
        expires_at=expires_at,
    )


@dataclass(slots=True)
class _Answer:
    """What a reply brought: its final chunk (the metrics), the text and thinking of all its
    chunks, how many there were, and when the first one with generated text arrived."""

    final: dict[str, Any]
    text: str
    thinking: str
    chunks: int = 1
    first_token: float | None = None

    def reply(self, endpoint: Endpoint) -> Reply:
        if endpoint is Endpoint.CHAT and "message" not in self.final and self.chunks == 1:
            raise TransientBackendError("chat reply has no message", kind="invalid_response")
        metrics = clamp_metrics(self.final, METRIC_FIELDS)
        return Reply(text=self.text, metrics=metrics, thinking=self.thinking or None)


def _object(raw: bytes | bytearray, what: str) -> dict[str, Any]:
    """One JSON object of the reply; Ollama's error object, which may come after the headers
    went out (as a stream's last line), as a transient failure."""
    try:
        d = json.loads(raw)
    except ValueError as e:
        raise TransientBackendError(
            f"{what} is not JSON: {bytes(raw[:200])!r}", kind="invalid_response"
        ) from e
    if not isinstance(d, dict):
        raise TransientBackendError(f"{what} is not a JSON object", kind="invalid_response")
    if "error" in d:
        err = cap_error(str(d["error"]))
        raise TransientBackendError(err, kind="stream_error", status_code=200)
    return d


def _utf8(text: str) -> bytes:
    # A lone surrogate (JSON's "\ud800") is kept as it came, not an error.
    return text.encode("utf-8", "surrogatepass")


def _plain(endpoint: Endpoint, body: bytearray, limits: ReplyLimits) -> _Answer:
    d = _object(body, "reply")
    text, thinking = _chunk_text(endpoint, d)
    cap = limits.max_text_bytes
    # At most 4 bytes a character: only a long text needs encoding to be measured.
    if 4 * (len(text) + len(thinking)) > cap and len(_utf8(text)) + len(_utf8(thinking)) > cap:
        raise text_too_long(cap)
    return _Answer(d, text, thinking)


async def _read_stream(
    endpoint: Endpoint, content: aiohttp.StreamReader, limits: ReplyLimits
) -> _Answer:
    """The stream up to its final chunk, keeping only the text and the final chunk: a chunk
    dict a token would hold a worker's memory at ~0.5 KB a token. The text is kept as UTF-8,
    which the cap counts: in a str, one emoji would make every character take four bytes."""
    text, thinking = bytearray(), bytearray()
    chunks = 0
    first_token: float | None = None
    async with contextlib.aclosing(lines(content, limits.max_line_bytes)) as stream:
        async for line in stream:
            if not line.strip():
                continue
            d = _object(line, "stream line")
            t, th = _chunk_text(endpoint, d)
            if t or th:
                if first_token is None:
                    first_token = clock.monotonic()
                text += _utf8(t)
                thinking += _utf8(th)
                if len(text) + len(thinking) > limits.max_text_bytes:
                    raise text_too_long(limits.max_text_bytes)
            chunks += 1
            if d.get("done"):
                # The answer is complete whatever the server does next.
                await drain(content, limits.max_line_bytes)
                return _Answer(d, _text(text), _text(thinking), chunks, first_token)
    raise TransientBackendError("stream ended before the final chunk", kind="incomplete_response")


def _text(utf8: bytearray) -> str:
    return utf8.decode("utf-8", "surrogatepass")


def _chunk_text(endpoint: Endpoint, chunk: dict[str, Any]) -> tuple[str, str]:
    """A chunk's (text, thinking); what is not a string counts as none."""
    src = chunk.get("message") if endpoint is Endpoint.CHAT else chunk
    if not isinstance(src, dict):
        return "", ""
    t, th = src.get("content" if endpoint is Endpoint.CHAT else "response"), src.get("thinking")
    return (t if isinstance(t, str) else ""), (th if isinstance(th, str) else "")


def _embed_reply(d: dict[str, Any], inputs: int) -> Reply:
    vectors = d.get("embeddings")
    if not isinstance(vectors, list) or len(vectors) != inputs:
        got = len(vectors) if isinstance(vectors, list) else "no"
        raise TransientBackendError(
            f"embed reply has {got} embeddings for {inputs} inputs", kind="invalid_response"
        )
    try:
        packed = [pack(v) for v in vectors]
    except ValueError as e:
        raise TransientBackendError(f"embed reply: {e}", kind="invalid_response") from None
    return Reply(text="", metrics=clamp_metrics(d, METRIC_FIELDS), embeddings=packed)
