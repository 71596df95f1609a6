"""Redis URLs with passwords work, and the password never shows in anything printed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from batchq.records import Endpoint, Item
from batchq.store.batches import BatchStore
from batchq.store.connection import arq_redis_settings, connect, redact
from batchq.store.keys import Keys
from tests.conftest import free_port, run_small_batch, valkey_process
from tests.waits import wait_until

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


@pytest.fixture(scope="module")
def tls_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A TLS-only Redis, from the machine's redis-server when it is built with TLS."""
    server_bin, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if not server_bin or not openssl:
        pytest.skip("needs redis-server and openssl")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            server_bin,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(d / "cert.pem"),
            "--tls-key-file",
            str(d / "key.pem"),
            "--tls-ca-cert-file",
            str(d / "cert.pem"),
            "--tls-auth-clients",
            "no",
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
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={d / 'cert.pem'}"
    try:

        def answers() -> bool:
            if proc.poll() is not None:
                pytest.skip("redis-server here is not built with TLS")
            with redis.Redis.from_url(url) as client:
                return bool(client.ping())

        wait_until(answers, what="the TLS server", ignore=(redis.ConnectionError,))
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


async def test_tls_with_password_end_to_end(tls_url: str, tmp_path: Path) -> None:
    assert arq_redis_settings(tls_url).ssl is True
    assert await run_small_batch(tls_url, "tls", tmp_path, 3) == 3


def test_worker_log_never_shows_the_password(protected_url: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchq",
            "worker",
            "--burst",
            "--redis",
            protected_url,
            "--prefix",
            "pwlog",
            "--ollama",
            "http://127.0.0.1:9",
            "-v",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout + proc.stderr
    assert "redis://:***@127.0.0.1" in log  # it does say where it connects
    assert PASSWORD not in log
