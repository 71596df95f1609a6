"""A live ``batchq serve`` (with an API key) and the simulator, shared by the API tests; an
``openai`` client of it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from openai import OpenAI

from tests.api.live import KEY, Served, serving
from tests.procs import env_for, simulator


@pytest.fixture(scope="package")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = ["--eval-tokens-per-s", "0", "--prompt-tokens-per-s", "0"]
    with simulator(tmp_path_factory.mktemp("sim"), *args) as url:
        yield url


@pytest.fixture(scope="package")
def served(
    valkey_url: str, sim_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("home")
    env = env_for(valkey_url, "t" + secrets.token_hex(4), home, sim_url, BATCHQ_API_KEYS=KEY)
    with serving(env, home) as served:
        yield served


@pytest.fixture
def client(served: Served) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{served.url}/v1", api_key=KEY, max_retries=0, timeout=60) as c:
        yield c
