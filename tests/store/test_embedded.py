from __future__ import annotations

from pathlib import Path

import redis

from batchq.store.embedded import EmbeddedServer


def test_start_reuse_and_restart_keep_data(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "home")
    url = server.ensure()
    try:
        assert server.ensure() == url  # a second command reuses the running server
        client = redis.Redis.from_url(url)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.set("kept", "yes")
        client.close()
    finally:
        assert server.stop()
    assert server.url() is None
    url2 = server.ensure()  # as after a reboot: same data, from the AOF
    try:
        client = redis.Redis.from_url(url2)
        assert client.get("kept") == b"yes"
        client.close()
    finally:
        server.stop()


def test_a_stale_port_file_naming_another_server_is_not_trusted(
    tmp_path: Path, valkey_url: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # The port now belongs to some other server (here: the test session's own).
    (home / "valkey.port").write_text(valkey_url.rsplit(":", 1)[1])
    server = EmbeddedServer(home)
    assert server.url() is None
    url = server.ensure()
    try:
        assert url != valkey_url
    finally:
        server.stop()
