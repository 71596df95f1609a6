"""The simulator, checked against the official ``ollama`` client as the oracle for reply shapes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from array import array
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import ollama
import pytest

from batchq.errors import ConfigError
from batchq.sim.process import (
    SimConfig,
    SimServer,
    expected_embedding,
    expected_response,
    parse_model_speeds,
    parse_models,
    running_sim,
    runs_away,
)
from tests.waits import async_wait_until

BUSY = "server busy, please try again.  maximum pending requests exceeded"
DURATIONS = (
    "total_duration",
    "load_duration",
    "prompt_eval_duration",
    "eval_duration",
)


def fast(**overrides: Any) -> SimConfig:
    """A config whose token costs are instant, so only the costs a test asks for take time."""
    return SimConfig(**{"prompt_tokens_per_s": 0.0, "eval_tokens_per_s": 0.0, **overrides})


@contextlib.asynccontextmanager
async def sim(
    config: SimConfig | None = None,
) -> AsyncIterator[tuple[SimServer, ollama.AsyncClient]]:
    server = SimServer(config or fast())
    url = await server.start()
    try:
        async with ollama.AsyncClient(host=url) as client:
            yield server, client
    finally:
        await server.stop()


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def check_durations(reply: Any) -> None:
    for field in DURATIONS:
        value = getattr(reply, field)
        assert isinstance(value, int) and value >= 0, (field, value)
    assert reply.total_duration >= reply.load_duration


def test_expected_response_is_a_pure_function_of_seed_model_and_prompt() -> None:
    text = expected_response("llama3.2", "hello")
    words = text.split(" ")
    assert len(words) == 8 and len(words[0]) == 12
    int(words[0], 16)
    assert text == expected_response("llama3.2", "hello", seed=0, tokens=8)
    assert expected_response("llama3.2", "hello", tokens=3) == " ".join(words[:3])
    assert expected_response("llama3.2", "hello", tokens=20).startswith(text + " ")
    assert expected_response("llama3.2", "hello", seed=1) != text
    assert expected_response("qwen3:8b", "hello") != text
    assert expected_response("llama3.2", "hello!") != text
    assert expected_response("llama3.2", "hello", tokens=0) == ""


def test_generate_non_streamed_parses_and_matches() -> None:
    async def body() -> None:
        async with sim() as (_, client):
            reply = await client.generate(model="llama3.2", prompt="why is the sky blue")
            assert isinstance(reply, ollama.GenerateResponse)
            assert reply.response == expected_response("llama3.2", "why is the sky blue")
            assert reply.done is True and reply.done_reason == "stop"
            assert reply.model == "llama3.2"
            assert reply.created_at is not None and reply.created_at.endswith("Z")
            assert reply.prompt_eval_count == 5 and reply.eval_count == 8
            assert reply.context and all(isinstance(t, int) for t in reply.context)
            check_durations(reply)

    run(body)


def test_generate_streamed_chunks_concatenate_to_the_reply() -> None:
    async def body() -> None:
        async with sim() as (_, client):
            stream = await client.generate(model="gemma3:4b", prompt="tell me", stream=True)
            parts = [part async for part in stream]
            assert [p.done for p in parts] == [False] * 8 + [True]
            assert "".join(p.response or "" for p in parts) == expected_response(
                "gemma3:4b", "tell me"
            )
            assert parts[0].response == expected_response("gemma3:4b", "tell me", tokens=1)
            assert parts[1].response is not None and parts[1].response.startswith(" ")
            final = parts[-1]
            assert final.response == "" and final.done_reason == "stop" and final.context
            assert parts[0].total_duration is None
            check_durations(final)

    run(body)


def test_chat_uses_the_last_user_message() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "second question"},
    ]

    async def body() -> None:
        async with sim() as (_, client):
            want = expected_response("qwen3:8b", "second question")
            reply = await client.chat(model="qwen3:8b", messages=messages)
            assert isinstance(reply, ollama.ChatResponse)
            assert reply.message.role == "assistant" and reply.message.content == want
            assert reply.done_reason == "stop" and reply.prompt_eval_count == 8
            check_durations(reply)
            parts = [p async for p in await client.chat("qwen3:8b", messages=messages, stream=True)]
            assert "".join(p.message.content or "" for p in parts) == want
            assert parts[-1].done and parts[-1].message.content == ""
            check_durations(parts[-1])
            no_user = await client.chat("qwen3:8b", messages=[{"role": "system", "content": "x"}])
            assert no_user.message.content == expected_response("qwen3:8b", "")

    run(body)


def test_stream_defaults_to_true_and_is_ndjson() -> None:
    async def body() -> None:
        async with sim() as (server, _), httpx.AsyncClient(base_url=server.url) as http:
            r = await http.post("/api/generate", json={"model": "llama3.2", "prompt": "hi"})
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(line) for line in r.text.splitlines()]
            assert len(lines) == 9 and lines[-1]["done"] is True
            assert set(lines[0]) == {"model", "created_at", "response", "done"}
            r = await http.post("/api/chat", json={"model": "llama3.2", "stream": False})
            assert r.headers["content-type"].startswith("application/json")
            assert r.json()["done_reason"] == "load"  # no messages: Ollama just loads the model

    run(body)


def test_embed_is_deterministic_and_normalised() -> None:
    async def body() -> None:
        async with sim() as (_, client):
            one = await client.embed(model="nomic-embed-text", input="hello world")
            many = await client.embed(model="nomic-embed-text", input=["a", "hello world"])
            assert isinstance(one, ollama.EmbedResponse)
            assert len(one.embeddings) == 1 and len(many.embeddings) == 2
            assert list(many.embeddings[1]) == list(one.embeddings[0])
            assert many.embeddings[0] != many.embeddings[1]
            for vector in many.embeddings:
                assert len(vector) == 768
                # float32 values, like Ollama's: normalised to float32's precision
                assert all(array("f", [v])[0] == v for v in vector)
                assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-6)
            assert list(one.embeddings[0]) == expected_embedding("nomic-embed-text", "hello world")
            assert many.prompt_eval_count == 3
            assert isinstance(one.total_duration, int)

    run(body)


def test_embed_vector_depends_only_on_its_own_text() -> None:
    # What lets a worker send many items in one /api/embed and keep each item's vector.
    async def body() -> None:
        async with sim(fast(embed_dim=32)) as (_, client):
            texts = [f"text number {i}" for i in range(6)]
            alone = [
                (await client.embed(model="nomic-embed-text", input=t)).embeddings[0] for t in texts
            ]
            together = await client.embed(model="nomic-embed-text", input=texts)
            shuffled = await client.embed(model="nomic-embed-text", input=texts[::-1])
        assert [list(v) for v in together.embeddings] == [list(v) for v in alone]
        assert [list(v) for v in shuffled.embeddings] == [list(v) for v in alone[::-1]]

    run(body)


def test_embed_input_past_the_context_fails_the_request_without_truncate() -> None:
    async def body() -> None:
        async with sim(fast(embed_context=3)) as (server, client):
            inputs = ["short one", "one two three four"]
            with pytest.raises(ollama.ResponseError) as err:
                await client.embed(model="nomic-embed-text", input=inputs, truncate=False)
            assert err.value.status_code == 400
            assert err.value.error == "the input length exceeds the context length"
            # Truncated (the default), the same inputs are embedded; a short one alone too.
            cut = await client.embed(model="nomic-embed-text", input=inputs)
            assert len(cut.embeddings) == 2
            ok = await client.embed(model="nomic-embed-text", input="short one", truncate=False)
            assert list(ok.embeddings[0]) == list(cut.embeddings[0])
            assert server.stats()["by_status"] == {"400": 1, "200": 2}
            assert server.stats()["embeds"] == 3

    run(body)


def test_embed_dimensions_shorten_and_renormalise_like_ollama() -> None:
    async def body() -> None:
        async with sim(fast(seed=4, embed_dim=16)) as (_, client):
            full = await client.embed(model="nomic-embed-text", input="x")
            short = await client.embed(model="nomic-embed-text", input="x", dimensions=4)
            longer = await client.embed(model="nomic-embed-text", input="x", dimensions=99)
        assert list(full.embeddings[0]) == expected_embedding(
            "nomic-embed-text", "x", seed=4, dim=16
        )
        assert list(short.embeddings[0]) == expected_embedding(
            "nomic-embed-text", "x", seed=4, dim=4
        )
        assert longer.embeddings == full.embeddings
        ratio = short.embeddings[0][0] / full.embeddings[0][0]
        assert all(
            math.isclose(s, f * ratio, rel_tol=1e-5)
            for s, f in zip(short.embeddings[0], full.embeddings[0][:4], strict=True)
        )

    run(body)


def test_metadata_endpoints_parse() -> None:
    async def body() -> None:
        async with sim() as (server, client), httpx.AsyncClient(base_url=server.url) as http:
            tags = await client.list()
            names = [m.model for m in tags.models]
            assert names == [
                "llama3.2:latest",
                "qwen3:8b",
                "gemma3:4b",
                "nomic-embed-text:latest",
            ]
            assert (await client.ps()).models == []
            await client.generate(model="llama3.2", prompt="x")
            ps = await client.ps()
            assert [m.model for m in ps.models] == ["llama3.2:latest"]
            assert ps.models[0].expires_at is not None
            show = await client.show("llama3.2")
            assert show.modelinfo and show.modelfile and show.template is not None
            assert show.parameters is not None and show.details is not None
            assert show.capabilities == ["completion"]
            embed_show = await client.show("nomic-embed-text")
            assert embed_show.capabilities == ["embedding"]
            assert (await http.get("/api/version")).json() == {"version": "0.12.0"}
            root = await http.get("/")
            assert root.status_code == 200 and root.text == "Ollama is running"

    run(body)


def test_errors_match_ollama() -> None:
    async def body() -> None:
        async with sim() as (server, client), httpx.AsyncClient(base_url=server.url) as http:
            for call in (
                client.generate(model="mystery", prompt="x"),
                client.chat(model="mystery", messages=[{"role": "user", "content": "x"}]),
                client.embed(model="mystery", input="x"),
                client.show("mystery"),
            ):
                with pytest.raises(ollama.ResponseError) as err:
                    await call
                assert err.value.status_code == 404
                assert err.value.error == "model 'mystery' not found"

            async def post(path: str, **kwargs: Any) -> tuple[int, Any]:
                r = await http.post(path, **kwargs)
                return r.status_code, r.json()

            assert await post("/api/generate", json={"prompt": "x"}) == (
                404,
                {"error": "model '' not found"},
            )
            assert await post("/api/chat", json={"messages": []}) == (
                400,
                {"error": "model is required"},
            )
            status, reply = await post("/api/generate", content=b"{not json")
            assert status == 400 and reply["error"]
            status, reply = await post("/api/generate", json={"model": "llama3.2", "prompt": 3})
            assert status == 400 and "cannot unmarshal number" in reply["error"]
            status, reply = await post("/api/generate", json={"model": "nomic-embed-text"})
            assert (status, reply) == (
                400,
                {"error": '"nomic-embed-text" does not support generate'},
            )
            assert (await http.get("/api/generate")).status_code == 405

    run(body)


def test_injected_503_and_500() -> None:
    async def body() -> None:
        async with sim(fast(fail_503=1.0)) as (_, client):
            with pytest.raises(ollama.ResponseError) as err:
                await client.generate(model="llama3.2", prompt="x")
            assert (err.value.status_code, err.value.error) == (503, BUSY)
        async with sim(fast(fail_500=1.0)) as (server, client):
            with pytest.raises(ollama.ResponseError) as err:
                await client.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}])
            assert err.value.status_code == 500
            assert err.value.error == "llama runner process has terminated: exit status 2"
            assert server.stats()["by_status"] == {"500": 1}

    run(body)


def test_failure_sequence_depends_only_on_the_seed() -> None:
    async def statuses(seed: int) -> list[int]:
        body = {"model": "llama3.2", "prompt": "x", "stream": False}
        async with (
            sim(fast(seed=seed, fail_500=0.5)) as (server, _),
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            return [(await http.post("/api/generate", json=body)).status_code for _ in range(20)]

    async def body() -> None:
        first = await statuses(7)
        assert first == await statuses(7)
        assert set(first) == {200, 500}

    run(body)


def test_midstream_error() -> None:
    async def body() -> None:
        async with sim(fast(fail_midstream=1.0)) as (server, client):
            seen: list[str] = []
            with pytest.raises(ollama.ResponseError) as err:
                async for part in await client.generate("llama3.2", prompt="x", stream=True):
                    seen.append(part.response or "")
            assert err.value.status_code == -1 and err.value.error
            assert 1 <= len(seen) < 8
            assert "".join(seen) == expected_response("llama3.2", "x", tokens=len(seen))

            async with httpx.AsyncClient(base_url=server.url) as http:
                r = await http.post(
                    "/api/chat",
                    json={"model": "llama3.2", "messages": [{"role": "user", "content": "y"}]},
                )
                lines = [json.loads(line) for line in r.text.splitlines()]
                assert r.status_code == 200
                assert "error" in lines[-1] and not any(line.get("done") for line in lines)
                assert all(line["message"]["role"] == "assistant" for line in lines[:-1])

            with pytest.raises(ollama.ResponseError) as err:
                await client.generate(model="llama3.2", prompt="x")
            assert err.value.status_code == 500 and err.value.error

    run(body)


def test_runaway_reply_streams_without_end_until_the_client_hangs_up() -> None:
    async def body() -> None:
        async with sim(fast(fail_runaway=1.0)) as (server, client):
            n = 0
            # The official client's types parse every line; none of them ends the reply.
            async for part in await client.generate("llama3.2", prompt="x", stream=True):
                assert not part.done and part.response
                n += 1
                if n == 2000:
                    break
            assert server.stats()["runaways"] == 1

        # Which prompts run away is a property of the prompt (so a test knows which must fail).
        share = [runs_away(f"p{i}", 0.1) for i in range(2000)]
        assert 150 < sum(share) < 250 and share == [runs_away(f"p{i}", 0.1) for i in range(2000)]
        async with sim(fast(fail_runaway=0.1)) as (server, client):
            calm = next(f"p{i}" for i, r in enumerate(share) if not r)
            assert (await client.generate("llama3.2", prompt=calm)).done
            assert server.stats()["runaways"] == 0

    asyncio.run(body())


def test_num_predict_cuts_the_reply() -> None:
    async def body() -> None:
        async with sim() as (_, client):
            reply = await client.generate("llama3.2", prompt="p", options={"num_predict": 3})
            assert reply.done_reason == "length" and reply.eval_count == 3
            assert reply.response == expected_response("llama3.2", "p", tokens=3)
            parts = [
                p
                async for p in await client.chat(
                    "llama3.2",
                    messages=[{"role": "user", "content": "p"}],
                    options={"num_predict": 2},
                    stream=True,
                )
            ]
            assert len(parts) == 3 and parts[-1].done_reason == "length"
            longer = await client.generate("llama3.2", prompt="p", options={"num_predict": 50})
            assert longer.done_reason == "stop" and longer.eval_count == 8

    run(body)


def test_parallel_slots_bound_concurrency() -> None:
    async def body() -> None:
        async with sim(fast(parallel=2, latency=0.2)) as (server, client):
            start = time.perf_counter()
            replies = await asyncio.gather(
                *(client.generate(model="llama3.2", prompt=f"p{i}") for i in range(4))
            )
            # Two rounds at least: 4 requests never ran at once. That 2 did, the simulator's
            # own peak says below; a wall-clock upper bound would only measure the machine.
            assert time.perf_counter() - start >= 0.35
            for i, reply in enumerate(replies):
                assert reply.response == expected_response("llama3.2", f"p{i}")
            stats = server.stats()
            assert stats["max_concurrency"] == {"llama3.2": 2}
            assert stats["max_in_flight"] == 4  # two of them waited in the queue
            assert stats["in_flight"] == 0

    run(body)


def test_waiting_is_counted_and_shows_in_the_load_duration() -> None:
    async def body() -> None:
        async with sim(fast(parallel=1, latency=0.2)) as (server, client):
            replies = await asyncio.gather(
                *(client.generate(model="llama3.2", prompt=f"p{i}") for i in range(2))
            )
            # One of the two waited a whole request for the one slot: the request-seconds
            # waited say so, and so does its load duration (Ollama's scheduler wait).
            waited = server.stats()["waited_seconds"]
            assert waited >= 0.2
            slowest = max(r.load_duration or 0 for r in replies)
            assert slowest >= 0.2e9
            assert server.stats()["waiting"] == 0
            server.reset_stats()
            assert server.stats()["waited_seconds"] == 0.0

    run(body)


def test_slots_are_granted_first_in_first_out() -> None:
    async def body() -> None:
        # The first request holds the one slot while the others arrive, in order: each one is
        # sent once the simulator has the one before (a fixed 10 ms apart, a loaded machine
        # could connect them out of order).
        async with sim(fast(latency=0.3)) as (server, client):
            done: list[int] = []

            async def one(i: int) -> None:
                await client.generate(model="llama3.2", prompt=f"p{i}")
                done.append(i)

            tasks = []
            for i in range(5):
                tasks.append(asyncio.create_task(one(i)))

                def arrived(n: int = i + 1) -> bool:
                    return len(server.stats()["arrivals"]) == n

                await async_wait_until(arrived, what=f"request {i} arrived", interval=0.005)
            await asyncio.gather(*tasks)
            assert done == [0, 1, 2, 3, 4]

    run(body)


def test_queue_overflow_gives_503() -> None:
    async def body() -> None:
        async with sim(fast(parallel=1, max_queue=1, latency=0.3)) as (server, client):
            results = await asyncio.gather(
                *(client.generate(model="llama3.2", prompt=f"p{i}") for i in range(4)),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, ollama.ResponseError)]
            assert len(errors) == 2
            assert all((e.status_code, e.error) == (503, BUSY) for e in errors)
            assert server.stats()["by_status"] == {"200": 2, "503": 2}

    run(body)


def test_model_switching_costs_a_load() -> None:
    async def body() -> None:
        async with sim(fast(max_loaded=1, load_seconds=0.2)) as (_, client):
            first = await client.generate(model="llama3.2", prompt="a")
            second = await client.generate(model="llama3.2", prompt="b")
            assert first.load_duration is not None and first.load_duration >= 0.19e9
            # Not loaded again (that takes 0.2 s), with room for a loaded machine's stalls.
            assert second.load_duration is not None and second.load_duration < 0.15e9
            other = await client.generate(model="qwen3:8b", prompt="c")
            assert other.load_duration is not None and other.load_duration >= 0.19e9
            assert [m.model for m in (await client.ps()).models] == ["qwen3:8b"]
            check_durations(other)

    run(body)


def test_eviction_waits_for_in_flight_requests() -> None:
    async def body() -> None:
        async with sim(fast(max_loaded=1, latency=1.0)) as (server, client):
            old = asyncio.create_task(client.generate(model="llama3.2", prompt="a"))
            await async_wait_until(lambda: server.stats()["in_flight"] == 1, what="a in flight")
            new = await client.generate(model="gemma3:4b", prompt="b")
            assert (await old).response == expected_response("llama3.2", "a")
            # gemma3 could only load once llama3.2's request had finished, most of 1 s later
            # (a loaded machine may take a while to send the second request).
            assert new.load_duration is not None and new.load_duration >= 0.5e9

    run(body)


def test_eval_speed_sets_the_duration() -> None:
    async def body() -> None:
        config = SimConfig(eval_tokens_per_s=100.0, prompt_tokens_per_s=0.0, response_tokens=10)
        async with sim(config) as (_, client):
            reply = await client.generate(model="llama3.2", prompt="x")
            # 0.1 s at 100 tokens/s; below the 1 s that 10 tokens/s would take, with room for a
            # loaded machine's stalls.
            assert reply.eval_duration is not None and 0.09e9 <= reply.eval_duration < 0.9e9
            parts = [p async for p in await client.generate("llama3.2", prompt="x", stream=True)]
            final = parts[-1].eval_duration
            assert final is not None and 0.09e9 <= final < 0.9e9

    run(body)


def test_model_speeds_override_the_eval_speed_per_model() -> None:
    async def body() -> None:
        speeds = parse_model_speeds("qwen3:8b=50, llama3.2:latest=400")
        config = SimConfig(
            eval_tokens_per_s=100.0,
            prompt_tokens_per_s=0.0,
            response_tokens=40,
            model_speeds=speeds,
        )
        async with sim(config) as (_, client):
            seconds = {}
            for model in ("qwen3:8b", "llama3.2", "gemma3:4b"):
                reply = await client.generate(model=model, prompt="x")
                assert reply.eval_duration is not None and reply.eval_count == 40
                seconds[model] = reply.eval_duration / 1e9
            # 40 tokens at 50, 400 (the ':latest' alias names llama3.2) and the default 100
            # tok/s: 0.8, 0.1 and 0.4 s. Each is below what the next slower speed would take,
            # with 0.3 s to spare for a loaded machine's stalls.
            assert 0.8 <= seconds["qwen3:8b"] < 1.6
            assert 0.1 <= seconds["llama3.2"] < 0.4
            assert 0.4 <= seconds["gemma3:4b"] < 0.8

    run(body)


def test_model_speeds_are_checked() -> None:
    assert parse_model_speeds("a:1b=2.5,b=0") == (("a:1b", 2.5), ("b", 0.0))
    assert parse_models(" a, b ,") == ("a", "b")
    for bad in ("qwen3:8b", "=3", "qwen3:8b=fast", "x=nan"):
        with pytest.raises(ValueError, match="NAME=TOKENS_PER_SECOND"):
            parse_model_speeds(bad)
    with pytest.raises(ValueError):
        parse_models(",")
    with pytest.raises(ConfigError, match="'mistral', which the simulator does not serve"):
        SimServer(SimConfig(model_speeds=(("mistral", 10.0),)))


def test_a_client_that_gives_up_frees_its_place() -> None:
    async def body() -> None:
        async with sim(fast(latency=0.3)) as (server, client):
            running = asyncio.create_task(client.generate(model="llama3.2", prompt="a"))
            await async_wait_until(lambda: server.stats()["in_flight"] == 1, what="a in flight")
            async with httpx.AsyncClient(base_url=server.url, timeout=0.1) as impatient:
                with pytest.raises(httpx.TimeoutException):
                    await impatient.post("/api/generate", json={"model": "llama3.2", "prompt": "b"})
            await running
            after = await client.generate(model="llama3.2", prompt="c")
            # Not queued behind the abandoned request: its slot was free when it came, where
            # it would have waited the abandoned one's 0.3 s (measured by the simulator, not
            # by the machine's wall clock).
            assert after.load_duration is not None and after.load_duration < 0.15e9
            stats = server.stats()
            assert stats["by_status"] == {"200": 2, "499": 1}
            assert stats["in_flight"] == 0

    run(body)


def test_stats_over_http_and_reset() -> None:
    async def body() -> None:
        async with sim() as (server, client), httpx.AsyncClient(base_url=server.url) as http:
            for prompt in ("a", "b", "a"):
                await client.generate(model="llama3.2", prompt=prompt)
            with pytest.raises(ollama.ResponseError):
                await client.generate(model="nope", prompt="c")
            stats = (await http.get("/_sim/stats")).json()
            assert stats == server.stats()
            assert stats["requests"] == 4
            assert stats["by_status"] == {"200": 3, "404": 1}
            assert stats["answered"] == 3
            assert (await http.get("/api/ps")).status_code == 200
            assert server.stats()["answered"] == 3  # a metadata GET is no answer
            stats = server.stats()
            assert stats["prompts"] == {"a": 2, "b": 1}
            assert stats["max_concurrency"] == {"llama3.2": 1}
            assert len(stats["arrivals"]) == 3  # inference requests for a known model
            assert stats["arrivals"] == sorted(stats["arrivals"])
            assert sorted(stats["arrival_prompts"]) == ["a", "a", "b"]
            assert (stats["loads"], stats["unloads"]) == ({"llama3.2": 1}, {})
            assert (await http.post("/_sim/reset")).status_code == 200
            assert server.stats() == {
                "requests": 0,
                "by_status": {},
                "max_concurrency": {},
                "in_flight": 0,
                "max_in_flight": 0,
                "waiting": 0,
                "waited_seconds": 0.0,
                "loads": {},
                "unloads": {},
                "prompts": {},
                "runaways": 0,
                "answered": 0,
                "embeds": 0,
                "arrivals": [],
                "arrival_prompts": [],
            }

    run(body)


def test_running_sim_serves_sync_callers() -> None:
    with running_sim(fast(parallel=4)) as server:
        assert server.url.startswith("http://127.0.0.1:")
        with ollama.Client(host=server.url) as client:
            reply = client.generate(model="llama3.2", prompt="sync")
        assert reply.response == expected_response("llama3.2", "sync")
        assert server.stats()["prompts"] == {"sync": 1}
        server.reset_stats()
        assert server.stats()["requests"] == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/")


def test_sim_command_rejects_a_bad_model_speed(capsys: pytest.CaptureFixture[str]) -> None:
    from batchq.cli.main import main

    assert main(["sim", "--port", "0", "--model-speeds", "qwen3:8b:40"]) == 2
    assert "--model-speeds: 'qwen3:8b:40' is not NAME=TOKENS_PER_SECOND" in capsys.readouterr().err
