"""The Ollama client: one request per item, streamed or not, and every way it can fail mapped
to a transient or permanent :class:`~batchq.errors.OllamaError` in one place."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from .errors import OllamaError, PermanentOllamaError, TransientOllamaError
from .models import Endpoint, Item
from .vectors import pack

__all__ = ["METRIC_FIELDS", "OllamaClient", "Reply", "classify_status"]

METRIC_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
    "done_reason",
)


@dataclass(slots=True)
class Reply:
    text: str
    metrics: dict[str, Any] = field(default_factory=dict)
    thinking: str | None = None
    # An embed reply's vectors, one per input, packed for storage (batchq.vectors.pack).
    embeddings: list[str] | None = None


def classify_status(status: int, message: str) -> OllamaError:
    """The one place that decides what is worth retrying."""
    if status == 404:
        return PermanentOllamaError(message, kind="model_not_found", status_code=status)
    if status == 429:
        return TransientOllamaError(message, kind="rate_limited", status_code=status)
    if status == 503:
        return TransientOllamaError(message, kind="server_busy", status_code=status)
    if status >= 500:
        return TransientOllamaError(message, kind="server_error", status_code=status)
    if status == 408:
        return TransientOllamaError(message, kind="timeout", status_code=status)
    return PermanentOllamaError(message, kind="invalid_request", status_code=status)


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


class OllamaClient:
    """One per worker process; ``transport`` lets unit tests use ``httpx.MockTransport``."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        stream: bool = True,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.stream = stream
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=base_url,
            # Generations take minutes: the read timeout is per chunk when streaming, and the
            # whole request is bounded separately by the caller's overall timeout.
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> OllamaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def version(self) -> str:
        """Ollama's version; raises TransientOllamaError when it cannot be reached."""
        try:
            r = await self._client.get("/api/version", timeout=5.0)
        except httpx.HTTPError as e:
            raise TransientOllamaError(
                f"cannot reach Ollama at {self.base_url}: {e}", kind="connection_error"
            ) from e
        if r.status_code != 200:
            raise classify_status(r.status_code, _error_text(r.content))
        return str(r.json().get("version", "?"))

    async def send(self, item: Item) -> Reply:
        body = dict(item.body)
        embed = item.endpoint is Endpoint.EMBED
        if not embed:  # /api/embed answers in one piece and takes no stream field
            body["stream"] = self.stream
        try:
            if self.stream and not embed:
                return await self._send_streamed(item.endpoint, body)
            return await self._send_plain(item.endpoint, body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            # Nothing reached Ollama: it is down or unreachable, which says nothing about
            # the item (the worker does not count it as an attempt).
            raise TransientOllamaError(
                f"cannot reach Ollama at {self.base_url}: {type(e).__name__}: {e}",
                kind="unreachable",
            ) from e
        except httpx.TimeoutException as e:
            raise TransientOllamaError(
                f"request timed out ({type(e).__name__})", kind="timeout"
            ) from e
        except (httpx.TransportError, httpx.StreamError) as e:
            raise TransientOllamaError(
                f"connection error: {type(e).__name__}: {e}", kind="connection_error"
            ) from e

    async def _send_plain(self, endpoint: Endpoint, body: dict[str, Any]) -> Reply:
        r = await self._client.post(endpoint.path, json=body)
        if r.status_code != 200:
            raise classify_status(r.status_code, _error_text(r.content))
        try:
            d = r.json()
        except ValueError as e:
            raise TransientOllamaError("reply is not JSON", kind="invalid_response") from e
        if isinstance(d, dict) and "error" in d:
            raise TransientOllamaError(str(d["error"]), kind="stream_error", status_code=200)
        if endpoint is Endpoint.EMBED:
            return _embed_reply(d, len(body["input"]))
        return _reply_from_chunks(endpoint, [d])

    async def _send_streamed(self, endpoint: Endpoint, body: dict[str, Any]) -> Reply:
        async with self._client.stream("POST", endpoint.path, json=body) as r:
            if r.status_code != 200:
                raise classify_status(r.status_code, _error_text(await r.aread()))
            chunks: list[dict[str, Any]] = []
            async for line in r.aiter_lines():
                # No break at the final chunk: a body read to its end lets httpx keep the
                # connection alive; leaving early closed it, a new TCP connect per request.
                if not line.strip() or (chunks and chunks[-1].get("done")):
                    continue
                try:
                    d = json.loads(line)
                except ValueError as e:
                    raise TransientOllamaError(
                        f"unparseable stream line: {line[:200]!r}", kind="invalid_response"
                    ) from e
                if "error" in d:
                    # Ollama reports a failure after the headers went out as a last line.
                    raise TransientOllamaError(
                        str(d["error"]), kind="stream_error", status_code=200
                    )
                chunks.append(d)
        if not chunks or not chunks[-1].get("done"):
            raise TransientOllamaError(
                "stream ended before the final chunk", kind="incomplete_response"
            )
        return _reply_from_chunks(endpoint, chunks)


def _reply_from_chunks(endpoint: Endpoint, chunks: list[dict[str, Any]]) -> Reply:
    text: list[str] = []
    thinking: list[str] = []
    for c in chunks:
        if endpoint is Endpoint.CHAT:
            msg = c.get("message") or {}
            text.append(msg.get("content") or "")
            thinking.append(msg.get("thinking") or "")
        else:
            text.append(c.get("response") or "")
            thinking.append(c.get("thinking") or "")
    final = chunks[-1]
    if endpoint is Endpoint.CHAT and "message" not in final and len(chunks) == 1:
        raise TransientOllamaError("chat reply has no message", kind="invalid_response")
    metrics = {k: final[k] for k in METRIC_FIELDS if k in final}
    joined_thinking = "".join(thinking)
    return Reply(text="".join(text), metrics=metrics, thinking=joined_thinking or None)


def _embed_reply(d: Any, inputs: int) -> Reply:
    vectors = d.get("embeddings") if isinstance(d, dict) else None
    if not isinstance(vectors, list) or len(vectors) != inputs:
        got = len(vectors) if isinstance(vectors, list) else "no"
        raise TransientOllamaError(
            f"embed reply has {got} embeddings for {inputs} inputs", kind="invalid_response"
        )
    try:
        packed = [pack(v) for v in vectors]
    except ValueError as e:
        raise TransientOllamaError(f"embed reply: {e}", kind="invalid_response") from None
    metrics = {k: d[k] for k in METRIC_FIELDS if k in d}
    return Reply(text="", metrics=metrics, embeddings=packed)
