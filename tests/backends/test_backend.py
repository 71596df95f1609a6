"""The seam between batchq and its inference servers: the Ollama client is a ``Backend``, the
pool builds it through the factory, loaded models come from a real (simulated) Ollama, and the
old error names still catch what backends raise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import fakeredis
import pytest

import batchq
from batchq import errors
from batchq.backends.base import Backend, LoadedModel
from batchq.backends.ollama import OllamaClient
from batchq.backends.pool import HostPool, open_backend
from batchq.records import Endpoint, Item
from batchq.settings import Settings
from batchq.sim.process import SimConfig, running_sim
from batchq.store.keys import Keys
from tests.conftest import free_port


async def test_the_ollama_client_is_a_backend() -> None:
    # The annotation is the check mypy makes; isinstance, the one at run time.
    backend: Backend = OllamaClient("http://127.0.0.1:1")
    assert isinstance(backend, Backend)
    assert isinstance(open_backend("http://127.0.0.1:1"), OllamaClient)


async def test_the_pool_builds_its_hosts_through_the_factory() -> None:
    settings = Settings(ollama_host="a,b", timeout=7, concurrency=3)
    pool = HostPool(settings, fakeredis.FakeAsyncRedis(), Keys("t"))
    try:
        for host in pool.hosts:
            assert isinstance(host.backend, Backend)
            assert isinstance(host.backend, OllamaClient)
            assert host.backend.base_url == host.url
            assert (host.backend.timeout, host.backend._max_connections) == (7, 6)
    finally:
        await pool.aclose()


def gen(model: str) -> Item:
    return Item(model, Endpoint.GENERATE, {"model": model, "prompt": "hi"})


async def test_loaded_models_follow_what_the_server_holds() -> None:
    with running_sim(SimConfig(max_loaded=2, eval_tokens_per_s=0)) as sim:
        async with open_backend(sim.url, timeout=30) as backend:
            assert await backend.loaded_models() == []
            await backend.send(gen("llama3.2"))
            await backend.send(gen("qwen3:8b"))
            before = datetime.now(UTC)
            models = await backend.loaded_models()
            assert [m.name for m in models] == ["qwen3:8b", "llama3.2:latest"]
            for m in models:
                assert isinstance(m, LoadedModel)
                assert m.size is not None and m.size > 0 and m.size_vram == m.size
                # The simulator keeps a model five minutes after its last use, like Ollama.
                assert m.expires_at is not None
                assert before < m.expires_at <= before + timedelta(minutes=5, seconds=30)
            await backend.send(gen("gemma3:4b"))  # evicts the least recently used
            names = [m.name for m in await backend.loaded_models()]
            assert names == ["gemma3:4b", "qwen3:8b"]


async def test_loaded_models_when_the_server_is_down_is_a_transient_error() -> None:
    async with open_backend(f"http://127.0.0.1:{free_port()}") as backend:
        with pytest.raises(errors.TransientBackendError, match="cannot reach Ollama") as e:
            await backend.loaded_models()
    assert e.value.kind == "connection_error"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("OllamaError", "BackendError"),
        ("TransientOllamaError", "TransientBackendError"),
        ("PermanentOllamaError", "PermanentBackendError"),
    ],
)
def test_the_old_error_names_catch_the_new_errors(old: str, new: str) -> None:
    old_cls, new_cls = getattr(batchq, old), getattr(batchq, new)
    assert old_cls is new_cls is getattr(errors, new)
    with pytest.raises(old_cls) as e:
        raise new_cls("x", kind="timeout", status_code=503)
    assert (e.value.message, e.value.kind, e.value.status_code) == ("x", "timeout", 503)
    with pytest.raises(errors.OllamaError):
        raise new_cls("x", kind="timeout")
