"""A live ``batchq serve`` (with an API key) and the simulator, shared by the API tests; an
``openai`` client of it."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI

from tests.api.live import KEY, Served
from tests.conftest import free_port
from tests.procs import env_for, simulator
from tests.waits import wait_until


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
    port = free_port()
    cmd = [sys.executable, "-m", "batchq", "serve", "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            assert server.poll() is None, "the server exited"
            return httpx.get(url + "/api/status", timeout=5).is_success

        wait_until(answers, interval=0.1, what="batchq serve", ignore=(httpx.HTTPError,))
        yield Served(url, env, home)
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err


@pytest.fixture
def client(served: Served) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{served.url}/v1", api_key=KEY, max_retries=0, timeout=60) as c:
        yield c
