"""The Ollama client against httpx.MockTransport: every failure lands in the right class."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from batchq.errors import PermanentOllamaError, TransientOllamaError
from batchq.models import Endpoint, Item
from batchq.ollama import OllamaClient, classify_status
from batchq.vectors import unpack

GEN = Item("a", Endpoint.GENERATE, {"model": "m", "prompt": "hi"})
CHAT = Item("b", Endpoint.CHAT, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
FINAL = {"done": True, "done_reason": "stop", "eval_count": 2, "total_duration": 5_000_000}


def ndjson(*objs: object) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def client(handler: Callable[[httpx.Request], httpx.Response], stream: bool = True) -> OllamaClient:
    return OllamaClient("http://ollama", stream=stream, transport=httpx.MockTransport(handler))


async def test_streamed_generate_joins_tokens_and_keeps_metrics() -> None:
    seen: list[dict[str, object]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(json.loads(req.content))
        assert req.url.path == "/api/generate"
        body = ndjson(
            {"response": "Hel", "done": False},
            {"response": "lo", "done": False},
            {"response": "", **FINAL},
        )
        return httpx.Response(200, content=body, headers={"content-type": "application/x-ndjson"})

    async with client(handler) as c:
        reply = await c.send(GEN)
    assert reply.text == "Hello"
    assert reply.metrics == {"done_reason": "stop", "eval_count": 2, "total_duration": 5_000_000}
    assert seen[0]["stream"] is True and seen[0]["prompt"] == "hi"


async def test_plain_chat_reply() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        assert req.url.path == "/api/chat"
        assert json.loads(req.content)["stream"] is False
        return httpx.Response(
            200, json={"message": {"role": "assistant", "content": "yo", "thinking": "hm"}, **FINAL}
        )

    async with client(handler, stream=False) as c:
        reply = await c.send(CHAT)
    assert (reply.text, reply.thinking) == ("yo", "hm")


async def test_error_line_inside_a_200_stream_is_transient() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        body = ndjson({"message": {"content": "par"}, "done": False}, {"error": "runner died"})
        return httpx.Response(200, content=body)

    async with client(handler) as c:
        with pytest.raises(TransientOllamaError) as e:
            await c.send(CHAT)
    err = e.value
    assert (err.kind, err.message, err.status_code) == ("stream_error", "runner died", 200)


async def test_stream_cut_before_done_is_transient() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=ndjson({"response": "x", "done": False}))

    async with client(handler) as c:
        with pytest.raises(TransientOllamaError, match="before the final chunk"):
            await c.send(GEN)


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
    stream: bool, status: int, body: object, cls: type[Exception], kind: str
) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    async with client(handler, stream=stream) as c:
        with pytest.raises(cls) as e:
            await c.send(GEN)
    err = e.value
    assert isinstance(err, (TransientOllamaError, PermanentOllamaError))
    assert (err.kind, err.status_code) == (kind, status)
    assert err.message == (body if isinstance(body, str) else body["error"])  # type: ignore[index]


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("refused"), "unreachable"),
        (httpx.ConnectTimeout("no answer"), "unreachable"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.RemoteProtocolError("reset"), "connection_error"),
    ],
)
async def test_transport_failures_are_transient(exc: Exception, kind: str) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise exc

    async with client(handler) as c:
        with pytest.raises(TransientOllamaError) as e:
            await c.send(GEN)
    assert e.value.kind == kind


async def test_openai_shaped_error_body_is_read() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"message": "no such model", "type": "x"}})

    async with client(handler, stream=False) as c:
        with pytest.raises(PermanentOllamaError, match=r"^no such model$"):
            await c.send(GEN)
    assert isinstance(classify_status(418, "teapot"), PermanentOllamaError)


async def test_version_unreachable() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with client(handler) as c:
        with pytest.raises(TransientOllamaError, match="cannot reach Ollama"):
            await c.version()


EMBED = Item("e", Endpoint.EMBED, {"model": "nomic-embed-text", "input": ["a", "b"]})


@pytest.mark.parametrize("stream", [True, False])
async def test_embed_is_one_plain_request_and_its_vectors_are_packed(stream: bool) -> None:
    seen: list[dict[str, object]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        assert req.url.path == "/api/embed"
        seen.append(json.loads(req.content))
        reply = {
            "model": "nomic-embed-text",
            "embeddings": [[0.5, -0.25], [1, 0]],
            "total_duration": 900,
            "load_duration": 10,
            "prompt_eval_count": 2,
        }
        return httpx.Response(200, json=reply)

    async with client(handler, stream=stream) as c:
        reply = await c.send(EMBED)
    assert seen == [{"model": "nomic-embed-text", "input": ["a", "b"]}]  # no "stream" field
    assert reply.embeddings and [unpack(v) for v in reply.embeddings] == [[0.5, -0.25], [1.0, 0.0]]
    assert reply.metrics == {"total_duration": 900, "load_duration": 10, "prompt_eval_count": 2}


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        ({"embeddings": [[0.5]]}, "1 embeddings for 2 inputs"),
        ({"model": "m"}, "no embeddings for 2 inputs"),
        ({"embeddings": [[0.5], ["x"]]}, "only numbers"),
        ({"embeddings": [[0.5], []]}, "non-empty"),
        ({"embeddings": [[0.5], [1e39]]}, "finite float32"),
    ],
)
async def test_a_malformed_embed_reply_is_transient(reply: object, match: str) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=reply)

    async with client(handler) as c:
        with pytest.raises(TransientOllamaError, match=match) as e:
            await c.send(EMBED)
    assert e.value.kind == "invalid_response"
