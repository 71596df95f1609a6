"""Redis URLs with passwords work, and the password never shows in anything printed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from batchq.records import Endpoint, Item
from batchq.store.batches import BatchStore
from batchq.store.connection import arq_redis_settings, connect, redis_unavailable
from batchq.store.keys import Keys
from tests.conftest import free_port, run_small_batch, valkey_process
from tests.waits import wait_until

PASSWORD = "s3cr3t-Pa55"
AT_PASSWORD = f"p@ss-{PASSWORD}"


@pytest.fixture(scope="module")
def protected_url() -> Iterator[str]:
    with valkey_process(password=PASSWORD) as port:
        yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0"


# Every form a Redis URL's secret takes, as redact_url shows it.
URL_FORMS = [
    (f"redis://user:{PASSWORD}@h/0", "redis://user:***@h/0"),
    (f"redis://:p@ss-{PASSWORD}@h", "redis://***@h"),  # userinfo ends at the last @
    (f"redis://h/0?password={PASSWORD}", "redis://h/0?password=***"),
    (
        f"rediss://:{PASSWORD}@h:6380/0?ssl_ca_certs=/ca.pem",
        "rediss://***@h:6380/0?ssl_ca_certs=***",
    ),
    (f"unix:///tmp/r.sock?db=2&password={PASSWORD}", "unix:///tmp/r.sock?db=***&password=***"),
    (f"unix://:{PASSWORD}@/tmp/r.sock", "unix://***@/tmp/r.sock"),
    (
        f"redis+sentinel://:{PASSWORD}@s1:26379,s2/mymaster/0",
        "redis+sentinel://***@s1:26379,s2/mymaster/0",
    ),
]


@pytest.mark.parametrize(("url", "shown"), URL_FORMS)
@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ConnectionError("refused"),
        redis.exceptions.ResponseError("NOAUTH"),
        redis.exceptions.OutOfMemoryError("OOM"),
    ],
)
def test_redis_unavailable_redacts_every_url_form(
    url: str, shown: str, error: redis.RedisError
) -> None:
    message = str(redis_unavailable(url, error))
    assert f"Redis at {shown}" in message and PASSWORD not in message


@pytest.mark.parametrize(("url", "shown"), URL_FORMS[:-1])
def test_unreachable_redis_error_hides_every_secret(url: str, shown: str) -> None:
    # Nothing listens on port 9 nor at /tmp/r.sock: the command fails at its first connect.
    url = url.replace("h:6380", "127.0.0.1:9").replace("@h", "@127.0.0.1:9")
    url = url.replace("//h/", "//127.0.0.1:9/")
    proc = subprocess.run(
        [sys.executable, "-m", "batchq", "list", "--redis", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("batchq: error: cannot reach Redis at ")
    assert "***" in proc.stderr and PASSWORD not in proc.stderr


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
    assert proc.stderr.startswith("batchq: error: cannot reach Redis at redis://***@")
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


@pytest.fixture(scope="module")
def at_password_port() -> Iterator[int]:
    """A server whose password holds an @, as generated passwords and people's often do."""
    with valkey_process(password=AT_PASSWORD) as port:
        yield port


@pytest.mark.parametrize(
    ("form", "shown"),
    [
        (f":{AT_PASSWORD}@127.0.0.1:{{port}}/0", "redis://***@127.0.0.1:{port}/0"),
        (f"default:{AT_PASSWORD}@127.0.0.1:{{port}}/0", "redis://default:***@127.0.0.1:{port}/0"),
        (
            f"127.0.0.1:{{port}}/0?password={quote(AT_PASSWORD)}",
            "redis://127.0.0.1:{port}/0?password=***",
        ),
    ],
)
def test_worker_log_never_shows_the_password(at_password_port: int, form: str, shown: str) -> None:
    url = "redis://" + form.format(port=at_password_port)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchq",
            "worker",
            "--burst",
            "--redis",
            url,
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
    # It connected (the query's password reaches arq too) and said where, redacted.
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout + proc.stderr
    assert f"worker: redis {shown.format(port=at_password_port)}, ollama" in log
    assert PASSWORD not in log and "p@ss" not in log
