"""Redis URLs with passwords work, and the password never shows in anything printed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from batchq.batches import BatchStore
from batchq.connection import connect, redact
from batchq.keys import Keys
from batchq.models import Endpoint, Item

from .conftest import valkey_process

PASSWORD = "s3cr3t-Pa55"


@pytest.fixture(scope="module")
def protected_url() -> Iterator[str]:
    with valkey_process(password=PASSWORD) as port:
        yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0"


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
