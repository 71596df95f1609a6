"""The simulator's residency as Ollama's ``server/sched.go`` decides it: the VRAM budget and
the victim findRunnerToUnload picks, keep_alive expiry and ``keep_alive: 0``, what ``/api/ps``
reports, loads and unloads counted, and the cost of a batched ``/api/embed`` — each read through
the official ``ollama`` client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import ollama
import pytest

from batchq.errors import ConfigError
from batchq.sim.process import SimServer, expected_embedding, expected_response
from tests.sim.test_sim import fast, run, sim
from tests.waits import async_wait_until

SIZES = (("llama3.2", 2.0), ("gemma3:4b", 2.0), ("qwen3:8b", 2.0))


async def loaded(client: ollama.AsyncClient) -> list[str]:
    return [m.model or "" for m in (await client.ps()).models]


def test_a_model_that_does_not_fit_unloads_the_least_recently_used_idle_one() -> None:
    async def body() -> None:
        config = fast(max_loaded=0, vram_gb=4.0, model_sizes=SIZES)
        async with sim(config) as (server, client):
            for model in ("llama3.2", "gemma3:4b", "llama3.2"):
                await client.generate(model=model, prompt="p")
            assert sorted(await loaded(client)) == ["gemma3:4b", "llama3.2:latest"]
            # 2 + 2 GB are loaded of 4: qwen3 needs room, and gemma3 was used longest ago.
            await client.generate(model="qwen3:8b", prompt="p")
            assert await loaded(client) == ["qwen3:8b", "llama3.2:latest"]
            stats = server.stats()
            assert stats["loads"] == {"llama3.2": 1, "gemma3:4b": 1, "qwen3:8b": 1}
            assert stats["unloads"] == {"gemma3:4b": 1}

    run(body)


def test_an_idle_victim_is_taken_before_a_busy_one_used_longer_ago() -> None:
    async def body() -> None:
        # llama3.2 alone is slow: 8 tokens at 5 a second.
        config = fast(max_loaded=2, model_speeds=(("llama3.2", 5.0),))
        async with sim(config) as (server, client):
            busy = asyncio.create_task(client.generate(model="llama3.2", prompt="long"))
            await async_wait_until(lambda: server.stats()["in_flight"] == 1, what="llama busy")
            await client.generate(model="gemma3:4b", prompt="p")
            # llama3.2 was used first but is busy, so gemma3 (idle) goes, and qwen3 loads
            # without waiting out llama3.2's 1.6 s.
            started = asyncio.create_task(client.generate(model="qwen3:8b", prompt="p"))
            await async_wait_until(
                lambda: server.stats()["loads"].get("qwen3:8b") == 1, what="qwen3 loaded"
            )
            assert not busy.done()
            assert server.stats()["unloads"] == {"gemma3:4b": 1}
            assert (await busy).response == expected_response("llama3.2", "long")
            await started

    run(body)


def test_a_model_larger_than_the_budget_still_loads_alone() -> None:
    async def body() -> None:
        async with sim(fast(max_loaded=0, vram_gb=1.0)) as (server, client):
            await client.generate(model="llama3.2", prompt="p")  # 2 GB: Ollama spills to CPU
            await client.generate(model="qwen3:8b", prompt="p")
            assert await loaded(client) == ["qwen3:8b"]
            assert server.stats()["unloads"] == {"llama3.2": 1}

    run(body)


def gone(
    client: ollama.AsyncClient, model: str
) -> Callable[[], Awaitable[bool | None] | bool | None]:
    async def cond() -> bool | None:
        return model not in await loaded(client)

    return cond


def test_an_idle_model_unloads_when_its_keep_alive_passes() -> None:
    async def body() -> None:
        async with sim(fast(max_loaded=0, keep_alive="300ms")) as (server, client):
            await client.generate(model="llama3.2", prompt="p")
            await client.generate(model="gemma3:4b", prompt="p", keep_alive="1h")
            await client.generate(model="qwen3:8b", prompt="p", keep_alive=0.3)
            assert "llama3.2:latest" in await loaded(client)
            # The server's 300 ms for llama3.2, the request's 0.3 s for qwen3; gemma3's own
            # hour keeps it.
            await async_wait_until(gone(client, "llama3.2:latest"), what="llama3.2 expired")
            await async_wait_until(gone(client, "qwen3:8b"), what="qwen3 expired")
            assert await loaded(client) == ["gemma3:4b"]
            assert server.stats()["unloads"] == {"llama3.2": 1, "qwen3:8b": 1}

    run(body)


def test_a_request_in_flight_holds_its_model_past_its_keep_alive() -> None:
    async def body() -> None:
        async with sim(fast(keep_alive="1s", latency=1.5)) as (server, client):
            await client.generate(model="llama3.2", prompt="a")
            # Expiry counts from the moment the model goes idle, never during a request: the
            # 1.5 s request outlived the 1 s keep_alive, and the model is still there.
            assert server.stats()["unloads"] == {}
            await async_wait_until(gone(client, "llama3.2:latest"), what="llama3.2 expired")
            assert server.stats()["unloads"] == {"llama3.2": 1}

    run(body)


def test_keep_alive_zero_unloads_once_the_request_is_done() -> None:
    async def body() -> None:
        async with sim(fast(parallel=2, latency=0.3)) as (server, client):
            first = asyncio.create_task(client.generate("llama3.2", prompt="a", keep_alive=0))
            await async_wait_until(lambda: server.stats()["in_flight"] == 1, what="a in flight")
            assert await loaded(client) == ["llama3.2:latest"]  # pinned while it runs
            await first
            assert await loaded(client) == []
            assert server.stats()["unloads"] == {"llama3.2": 1}

    run(body)


def test_an_empty_prompt_loads_and_with_keep_alive_zero_unloads() -> None:
    async def body() -> None:
        async with sim() as (server, client):
            preload = await client.generate(model="llama3.2", prompt="", keep_alive=-1)
            assert (preload.done, preload.done_reason) == (True, "load")
            [entry] = (await client.ps()).models
            assert entry.expires_at is not None and entry.expires_at.year > 2200  # forever
            chat = await client.chat(model="llama3.2", messages=[], keep_alive=0)
            assert (chat.done, chat.done_reason, chat.message.content) == (True, "unload", "")
            assert await loaded(client) == []
            assert server.stats()["unloads"] == {"llama3.2": 1}
            again = await client.generate(model="llama3.2", prompt="", keep_alive="0s")
            assert again.done_reason == "unload"  # nothing loaded: nothing to do
            assert server.stats()["loads"] == {"llama3.2": 1}

    run(body)


def test_ps_reports_expiry_and_size_as_the_last_request_set_them() -> None:
    async def body() -> None:
        config = fast(model_sizes=(("llama3.2:latest", 2.5),))
        async with sim(config) as (_, client):
            for keep_alive, expected in (("1h", timedelta(hours=1)), (90, timedelta(seconds=90))):
                before = datetime.now(UTC)
                await client.generate(model="llama3.2", prompt="p", keep_alive=keep_alive)
                after = datetime.now(UTC)
                [entry] = (await client.ps()).models
                assert entry.expires_at is not None
                assert before + expected <= entry.expires_at <= after + expected
                assert entry.size == entry.size_vram == 2_500_000_000
            # A request without keep_alive leaves the model's own duration (Ollama's
            # useLoadedRunner), not the server's 5 minutes.
            before = datetime.now(UTC)
            await client.generate(model="llama3.2", prompt="p")
            [entry] = (await client.ps()).models
            assert entry.expires_at is not None
            assert entry.expires_at >= before + timedelta(seconds=89)
            assert entry.expires_at <= datetime.now(UTC) + timedelta(seconds=90)
            [default] = [m for m in (await client.list()).models if m.model == "qwen3:8b"]
            assert default.size is not None

    run(body)


def test_loads_and_unloads_are_counted_per_model() -> None:
    async def body() -> None:
        async with sim(fast(max_loaded=1)) as (server, client):
            for model in ("llama3.2", "gemma3:4b", "llama3.2", "llama3.2"):
                await client.generate(model=model, prompt="p")
            stats = server.stats()
            assert stats["loads"] == {"llama3.2": 2, "gemma3:4b": 1}
            assert stats["unloads"] == {"llama3.2": 1, "gemma3:4b": 1}
            async with httpx.AsyncClient(base_url=server.url) as http:
                assert (await http.get("/_sim/stats")).json()["loads"] == stats["loads"]

    run(body)


def test_model_load_seconds_override_the_load_time_per_model() -> None:
    async def body() -> None:
        config = fast(load_seconds=0.0, model_load_seconds=(("qwen3:8b", 0.4),))
        async with sim(config) as (_, client):
            quick = await client.generate(model="llama3.2", prompt="p")
            slow = await client.generate(model="qwen3:8b", prompt="p")
            assert slow.load_duration is not None and slow.load_duration >= 0.39e9
            # Not the 0.4 s of qwen3, with room for a loaded machine's stalls.
            assert quick.load_duration is not None and quick.load_duration < 0.3e9

    run(body)


def test_a_batched_embed_costs_far_less_than_one_request_per_input() -> None:
    async def body() -> None:
        config = fast(prompt_tokens_per_s=20_000.0, embed_overhead=0.05)
        texts = [f"text number {i} here" for i in range(20)]
        async with sim(config) as (_, client):
            batch = await client.embed(model="nomic-embed-text", input=texts)
            singles = [await client.embed(model="nomic-embed-text", input=t) for t in texts]
            assert list(batch.embeddings) == [
                expected_embedding("nomic-embed-text", t) for t in texts
            ]
            assert [list(s.embeddings[0]) for s in singles] == list(batch.embeddings)
            one_each = sum(s.total_duration or 0 for s in singles)
            assert batch.total_duration is not None
            # 0.05 s + 80 tokens at 20,000/s against 20 x (0.05 s + 4 tokens): ~0.054 s
            # against ~1.0 s, as the simulator itself timed them.
            assert batch.total_duration >= 0.054e9
            assert batch.total_duration * 5 < one_each
            assert batch.prompt_eval_count == 80

    run(body)


def test_bad_keep_alives_and_per_model_values_are_refused() -> None:
    async def body() -> None:
        async with sim() as (server, _), httpx.AsyncClient(base_url=server.url) as http:
            # Raw bodies: the official client would turn true into 1.0 before sending it.
            for bad in ("soon", "5", True, [1]):
                body = {"model": "llama3.2", "prompt": "p", "keep_alive": bad}
                reply = await http.post("/api/generate", json=body)
                assert reply.status_code == 400, bad
                assert "duration" in reply.json()["error"]
            assert server.stats()["loads"] == {}

    run(body)
    with pytest.raises(ConfigError, match="--keep-alive"):
        SimServer(fast(keep_alive="later"))
    with pytest.raises(ConfigError, match="'mistral', which the simulator does not serve"):
        SimServer(fast(model_sizes=(("mistral", 4.0),)))
    with pytest.raises(ConfigError, match="a model load time is given for 'x'"):
        SimServer(fast(model_load_seconds=(("x", 4.0),)))


def test_expiry_waits_on_the_clock_not_on_requests() -> None:
    async def body() -> None:
        async with sim(fast(keep_alive="200ms")) as (_, client):
            start = time.monotonic()
            await client.generate(model="llama3.2", prompt="p")
            await async_wait_until(gone(client, "llama3.2:latest"), what="llama3.2 expired")
            # No request came to make it happen: a timer did, and not before its 200 ms.
            assert time.monotonic() - start >= 0.2

    run(body)


def test_sim_command_rejects_a_bad_keep_alive(capsys: pytest.CaptureFixture[str]) -> None:
    from batchq.cli.main import main

    assert main(["sim", "--port", "0", "--keep-alive", "soon"]) == 2
    assert '--keep-alive: time: invalid duration "soon"' in capsys.readouterr().err
