"""The Ollama client against a real HTTP server on a socket, scripted per test: every reply and
every failure lands in the right class."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from batchq.backends.base import Reply
from batchq.backends.ollama import OllamaClient, classify_status
from batchq.errors import PermanentOllamaError, TransientOllamaError
from batchq.records import Endpoint, Item
from batchq.vectors import unpack

GEN = Item("a", Endpoint.GENERATE, {"model": "m", "prompt": "hi"})
CHAT = Item("b", Endpoint.CHAT, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
FINAL = {"done": True, "done_reason": "stop", "eval_count": 2, "total_duration": 5_000_000}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def ndjson(*objs: object) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


class Scripted:
    """A server whose every request goes to ``handler``; requests are kept for assertions."""

    def __init__(self) -> None:
        self.handler: Handler | None = None
        self.seen: list[tuple[str, dict[str, object]]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.seen.append((request.path, json.loads(raw) if raw else {}))
        assert self.handler is not None
        return await self.handler(request)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Scripted, str]]:
    scripted = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield scripted, str(srv.make_url("")).rstrip("/")
    finally:
        await srv.close()


async def send(url: str, item: Item, *, stream: bool = True, read_timeout: float = 10) -> Reply:
    async with OllamaClient(url, stream=stream, timeout=read_timeout) as c:
        return await c.send(item)


def reply(status: int, body: object) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if isinstance(body, bytes):
            return web.Response(status=status, body=body)
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    return handler


async def test_streamed_generate_joins_tokens_and_keeps_metrics(
    server: tuple[Scripted, str],
) -> None:
    scripted, url = server
    scripted.handler = reply(
        200,
        ndjson(
            {"response": "Hel", "done": False},
            {"response": "lo", "done": False},
            {"response": "", **FINAL},
        ),
    )
    r = await send(url, GEN)
    assert r.text == "Hello"
    ttft = r.metrics.pop("time_to_first_token")
    assert isinstance(ttft, int) and ttft >= 0
    assert r.metrics == {"done_reason": "stop", "eval_count": 2, "total_duration": 5_000_000}
    path, body = scripted.seen[0]
    assert (path, body["stream"], body["prompt"]) == ("/api/generate", True, "hi")


async def test_stream_arriving_in_odd_pieces_with_a_huge_final_line(
    server: tuple[Scripted, str],
) -> None:
    # Ollama's last /api/generate chunk holds the context as token ids: far over 64 KiB for a
    # long prompt, and the network cuts lines anywhere.
    context = list(range(60_000))
    data = ndjson({"response": "a", "done": False}, {"response": "b", "context": context, **FINAL})

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(0, len(data), 7777):
            await resp.write(data[i : i + 7777])
        await resp.write_eof()
        return resp

    scripted, url = server
    scripted.handler = handler
    r = await send(url, GEN)
    assert r.text == "ab"


async def test_time_to_first_token_runs_to_the_first_chunk_with_text(
    server: tuple[Scripted, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted, url = server
    scripted.handler = reply(
        200,
        ndjson(
            {"message": {"role": "assistant", "content": ""}, "done": False},
            {"message": {"role": "assistant", "content": "", "thinking": "hm"}, "done": False},
            {"message": {"role": "assistant", "content": "yo"}, "done": False},
            {"message": {"role": "assistant", "content": ""}, **FINAL},
        ),
    )
    # One clock read when the request goes out, one at the first chunk with text (thinking).
    reads = iter([100.0, 100.25, 999.0])
    monkeypatch.setattr("batchq.clock.monotonic", lambda: next(reads))
    r = await send(url, CHAT)
    assert (r.text, r.thinking) == ("yo", "hm")
    assert r.metrics["time_to_first_token"] == 250_000_000


async def test_no_time_to_first_token_without_streaming_or_without_text(
    server: tuple[Scripted, str],
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if (await request.json())["stream"]:
            return web.Response(body=ndjson({"response": "", **FINAL}))
        return web.json_response({"response": "hi", **FINAL})

    scripted, url = server
    scripted.handler = handler
    for stream in (True, False):
        r = await send(url, GEN, stream=stream)
        assert "time_to_first_token" not in r.metrics
        assert r.metrics["eval_count"] == 2


async def test_plain_chat_reply(server: tuple[Scripted, str]) -> None:
    scripted, url = server
    scripted.handler = reply(
        200, {"message": {"role": "assistant", "content": "yo", "thinking": "hm"}, **FINAL}
    )
    r = await send(url, CHAT, stream=False)
    assert (r.text, r.thinking) == ("yo", "hm")
    assert scripted.seen[0][0] == "/api/chat" and scripted.seen[0][1]["stream"] is False


async def test_error_line_inside_a_200_stream_is_transient(server: tuple[Scripted, str]) -> None:
    scripted, url = server
    scripted.handler = reply(
        200, ndjson({"message": {"content": "par"}, "done": False}, {"error": "runner died"})
    )
    with pytest.raises(TransientOllamaError) as e:
        await send(url, CHAT)
    err = e.value
    assert (err.kind, err.message, err.status_code) == ("stream_error", "runner died", 200)


async def test_stream_cut_before_done_is_transient(server: tuple[Scripted, str]) -> None:
    scripted, url = server
    scripted.handler = reply(200, ndjson({"response": "x", "done": False}))
    with pytest.raises(TransientOllamaError, match="before the final chunk"):
        await send(url, GEN)


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("status", "body", "cls", "kind"),
    [
        (404, {"error": "model 'x' not found"}, PermanentOllamaError, "model_not_found"),
        (400, {"error": "bad"}, PermanentOllamaError, "invalid_request"),
        (
            503,
            {"error": "server busy, please try again.  maximum pending requests exceeded"},
            TransientOllamaError,
            "server_busy",
        ),
        (429, {"error": "slow down"}, TransientOllamaError, "rate_limited"),
        (
            500,
            {"error": "llama runner process has terminated"},
            TransientOllamaError,
            "server_error",
        ),
        (502, "<html>bad gateway</html>", TransientOllamaError, "server_error"),
    ],
)
async def test_status_codes(
    server: tuple[Scripted, str],
    stream: bool,
    status: int,
    body: object,
    cls: type[Exception],
    kind: str,
) -> None:
    scripted, url = server
    scripted.handler = reply(status, body)
    with pytest.raises(cls) as e:
        await send(url, GEN, stream=stream)
    err = e.value
    assert isinstance(err, (TransientOllamaError, PermanentOllamaError))
    assert (err.kind, err.status_code) == (kind, status)
    assert err.message == (body if isinstance(body, str) else body["error"])  # type: ignore[index]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_refused_connection_is_unreachable() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(TransientOllamaError) as e:
        await send(url, GEN)
    assert e.value.kind == "unreachable"
    async with OllamaClient(url) as c:
        with pytest.raises(TransientOllamaError, match="cannot reach Ollama"):
            await c.version()


async def test_silent_server_is_a_timeout(server: tuple[Scripted, str]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response()

    scripted, url = server
    scripted.handler = handler
    with pytest.raises(TransientOllamaError) as e:
        await send(url, GEN, read_timeout=0.2)
    assert e.value.kind == "timeout"


async def test_connection_dropped_mid_stream(server: tuple[Scripted, str]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(ndjson({"response": "x", "done": False}))
        assert request.transport is not None
        request.transport.abort()
        return resp

    scripted, url = server
    scripted.handler = handler
    with pytest.raises(TransientOllamaError) as e:
        await send(url, GEN)
    assert e.value.kind == "connection_error"


async def test_openai_shaped_error_body_is_read(server: tuple[Scripted, str]) -> None:
    scripted, url = server
    scripted.handler = reply(404, {"error": {"message": "no such model", "type": "x"}})
    with pytest.raises(PermanentOllamaError, match=r"^no such model$"):
        await send(url, GEN, stream=False)
    assert isinstance(classify_status(418, "teapot"), PermanentOllamaError)


EMBED = Item("e", Endpoint.EMBED, {"model": "nomic-embed-text", "input": ["a", "b"]})


@pytest.mark.parametrize("stream", [True, False])
async def test_embed_is_one_plain_request_and_its_vectors_are_packed(
    server: tuple[Scripted, str], stream: bool
) -> None:
    scripted, url = server
    scripted.handler = reply(
        200,
        {
            "model": "nomic-embed-text",
            "embeddings": [[0.5, -0.25], [1, 0]],
            "total_duration": 900,
            "load_duration": 10,
            "prompt_eval_count": 2,
        },
    )
    r = await send(url, EMBED, stream=stream)
    # No "stream" field: /api/embed takes none.
    assert scripted.seen == [("/api/embed", {"model": "nomic-embed-text", "input": ["a", "b"]})]
    assert r.embeddings and [unpack(v) for v in r.embeddings] == [[0.5, -0.25], [1.0, 0.0]]
    assert r.metrics == {"total_duration": 900, "load_duration": 10, "prompt_eval_count": 2}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"embeddings": [[0.5]]}, "1 embeddings for 2 inputs"),
        ({"model": "m"}, "no embeddings for 2 inputs"),
        ({"embeddings": [[0.5], ["x"]]}, "only numbers"),
        ({"embeddings": [[0.5], []]}, "non-empty"),
        ({"embeddings": [[0.5], [1e39]]}, "finite float32"),
    ],
)
async def test_a_malformed_embed_reply_is_transient(
    server: tuple[Scripted, str], body: object, match: str
) -> None:
    scripted, url = server
    scripted.handler = reply(200, body)
    with pytest.raises(TransientOllamaError, match=match) as e:
        await send(url, EMBED)
    assert e.value.kind == "invalid_response"


async def test_loaded_models_read_ollamas_ps_reply(server: tuple[Scripted, str]) -> None:
    scripted, url = server
    # As Ollama 0.12 answers: nanosecond stamps with an offset, fields batchq does not use.
    entry = {
        "name": "qwen3:8b",
        "model": "qwen3:8b",
        "size": 6_000_000_000,
        "size_vram": 4_000_000_000,
        "expires_at": "2025-06-04T14:38:31.837531234-07:00",
        "details": {"family": "qwen3"},
        "context_length": 4096,
    }
    scripted.handler = reply(200, {"models": [entry, {"model": "m", "expires_at": "later"}]})
    async with OllamaClient(url) as c:
        models = await c.loaded_models()
    assert scripted.seen[0][0] == "/api/ps"
    first, second = models
    assert (first.name, first.size, first.size_vram) == ("qwen3:8b", 6_000_000_000, 4_000_000_000)
    assert first.expires_at is not None and first.expires_at.utcoffset() == timedelta(hours=-7)
    assert (first.expires_at.hour, first.expires_at.microsecond) == (14, 837531)
    assert (second.name, second.size, second.expires_at) == ("m", None, None)


@pytest.mark.parametrize("body", [{"error": "x"}, {"models": [1]}, {"models": [{}]}, [1]])
async def test_a_malformed_ps_reply_is_transient(
    server: tuple[Scripted, str], body: object
) -> None:
    scripted, url = server
    scripted.handler = reply(200, body)
    async with OllamaClient(url) as c:
        with pytest.raises(TransientOllamaError, match="not a list of models") as e:
            await c.loaded_models()
    assert e.value.kind == "invalid_response"
