"""The Ollama client, batchq's one :class:`~batchq.backends.base.Backend`: one request per item
to Ollama's native API, streamed or not, and every way it can fail mapped to a transient or
permanent :class:`~batchq.errors.BackendError` in one place.

Built on aiohttp rather than httpx: against the zero-latency simulator, httpx spent 2.1 to 2.7 ms
of CPU per streamed request and aiohttp 0.25 to 0.28 ms (``bench/clients.py``), and on a small
machine that CPU is what caps a worker's throughput.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp

from batchq import clock
from batchq.backends.base import FIRST_TOKEN_FIELD, LoadedModel, Reply
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


def _error_text(body: bytes) -> str:
    try:
        d = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:500] or "(empty body)"
    if isinstance(d, dict):
        err = d.get("error")
        if isinstance(err, dict):  # the OpenAI-compatible shape
            return str(err.get("message", err))
        if err is not None:
            return str(err)
    return json.dumps(d)[:500]


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


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    # Split by hand: aiohttp's line iterator refuses lines over 128 KiB, and the final chunk of
    # /api/generate carries the whole context as token ids, which a long prompt makes larger.
    buf = b""
    async for chunk in content.iter_any():
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line
    if buf:
        yield buf


class OllamaClient:
    """One per worker process and host. The HTTP session opens on first use, inside the
    event loop that uses it."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        stream: bool = True,
        max_connections: int = 100,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.stream = stream
        self.timeout = timeout
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
                # the whole request is bounded separately by the caller's overall timeout.
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
                body = await r.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TransientBackendError(
                f"cannot reach Ollama at {self.base_url}: {type(e).__name__}: {e}",
                kind="connection_error",
            ) from e
        if r.status != 200:
            raise classify_status(r.status, _error_text(body))
        return body

    async def send(self, item: Item) -> Reply:
        body = dict(item.body)
        embed = item.endpoint is Endpoint.EMBED
        stream = self.stream and not embed
        if not embed:  # /api/embed answers in one piece and takes no stream field
            body["stream"] = stream
        first_token: float | None = None
        try:
            sent = clock.monotonic()
            async with self.session.post(PATHS[item.endpoint], json=body) as r:
                if r.status != 200:
                    raise classify_status(r.status, _error_text(await r.read()))
                if stream:
                    chunks, first_token = await _read_stream(item.endpoint, r.content)
                else:
                    chunks = [await _read_plain(r)]
        except (aiohttp.ClientError, TimeoutError) as e:
            raise _transport_error(e, self.base_url) from e
        if embed:
            return _embed_reply(chunks[0], len(body["input"]))
        reply = _reply_from_chunks(item.endpoint, chunks)
        if first_token is not None:
            reply.metrics[FIRST_TOKEN_FIELD] = round((first_token - sent) * 1e9)
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


async def _read_plain(r: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        d = json.loads(await r.read())
    except ValueError as e:
        raise TransientBackendError("reply is not JSON", kind="invalid_response") from e
    if not isinstance(d, dict):
        raise TransientBackendError("reply is not a JSON object", kind="invalid_response")
    if "error" in d:
        raise TransientBackendError(str(d["error"]), kind="stream_error", status_code=200)
    return d


async def _read_stream(
    endpoint: Endpoint, content: aiohttp.StreamReader
) -> tuple[list[dict[str, Any]], float | None]:
    """The stream's chunks, and when the first one with generated text arrived."""
    chunks: list[dict[str, Any]] = []
    first_token: float | None = None
    async for line in _lines(content):
        # No break at the final chunk: a body read to its end keeps the connection alive.
        if not line.strip() or (chunks and chunks[-1].get("done")):
            continue
        try:
            d = json.loads(line)
        except ValueError as e:
            raise TransientBackendError(
                f"unparseable stream line: {line[:200]!r}", kind="invalid_response"
            ) from e
        if "error" in d:
            # Ollama reports a failure after the headers went out as a last line.
            raise TransientBackendError(str(d["error"]), kind="stream_error", status_code=200)
        if first_token is None and any(_chunk_text(endpoint, d)):
            first_token = clock.monotonic()
        chunks.append(d)
    if not chunks or not chunks[-1].get("done"):
        raise TransientBackendError(
            "stream ended before the final chunk", kind="incomplete_response"
        )
    return chunks, first_token


def _chunk_text(endpoint: Endpoint, chunk: dict[str, Any]) -> tuple[str, str]:
    """A chunk's (text, thinking)."""
    if endpoint is Endpoint.CHAT:
        msg = chunk.get("message") or {}
        return msg.get("content") or "", msg.get("thinking") or ""
    return chunk.get("response") or "", chunk.get("thinking") or ""


def _reply_from_chunks(endpoint: Endpoint, chunks: list[dict[str, Any]]) -> Reply:
    text: list[str] = []
    thinking: list[str] = []
    for c in chunks:
        t, th = _chunk_text(endpoint, c)
        text.append(t)
        thinking.append(th)
    final = chunks[-1]
    if endpoint is Endpoint.CHAT and "message" not in final and len(chunks) == 1:
        raise TransientBackendError("chat reply has no message", kind="invalid_response")
    metrics = {k: final[k] for k in METRIC_FIELDS if k in final}
    joined_thinking = "".join(thinking)
    return Reply(text="".join(text), metrics=metrics, thinking=joined_thinking or None)


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
    metrics = {k: d[k] for k in METRIC_FIELDS if k in d}
    return Reply(text="", metrics=metrics, embeddings=packed)
