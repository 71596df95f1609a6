from __future__ import annotations

import contextlib
import stat
from pathlib import Path

import pytest
import redis

from batchq.errors import EmbeddedServerError
from batchq.store.embedded import EmbeddedServer


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


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


def test_the_server_takes_only_the_password_kept_in_a_private_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = EmbeddedServer(home)
    url = server.ensure()
    try:
        password = server.password_path.read_text().strip()
        port = int((home / "valkey.port").read_text())
        assert len(password) >= 40 and url == f"redis://:{password}@127.0.0.1:{port}"
        assert mode(home) == 0o700
        assert mode(server.password_path) == mode(server.conf_path) == 0o600
        with redis.Redis.from_url(url) as client:
            client.set("k", "v")
            client.bgrewriteaof()  # files the server writes itself: made under umask 077
        for path in [home / "valkey.log", *(home / "appendonlydir").iterdir()]:
            assert mode(path) & 0o077 == 0, path
        with (
            redis.Redis(port=port, socket_timeout=5) as anyone,
            pytest.raises(redis.AuthenticationError, match="Authentication required"),
        ):
            anyone.get("k")  # NOAUTH
        with (
            redis.Redis(port=port, password="guess", socket_timeout=5) as guesser,
            pytest.raises(redis.AuthenticationError),
        ):
            guesser.get("k")
        assert server.ensure() == url  # reused, same password
    finally:
        server.stop()
    assert server.ensure() == url  # started again: the same password, from its file
    server.stop()


def test_a_home_from_before_the_password_gets_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = EmbeddedServer(home)
    url = server.ensure()
    try:
        port = int((home / "valkey.port").read_text())
        # As an older batchq left it: a server without a password, no password file, a home
        # anyone may read.
        with redis.Redis.from_url(url) as client:
            client.config_set("requirepass", "")
            client.set("kept", "yes")
        server.password_path.unlink()
        home.chmod(0o755)
        with redis.Redis(port=port) as old_client:
            assert old_client.get("kept") == b"yes"
            assert server.url() == f"redis://127.0.0.1:{port}"  # still found, still works

            new_url = server.ensure()
            assert new_url != url and mode(server.password_path) == 0o600
            assert mode(home) == 0o700
            assert old_client.get("kept") == b"yes"  # connected clients stay connected
        with redis.Redis(port=port) as anyone, pytest.raises(redis.AuthenticationError):
            anyone.get("kept")
        with redis.Redis.from_url(new_url) as client:
            assert client.get("kept") == b"yes"
    finally:
        server.stop()
    assert server.ensure() == new_url  # its next start writes the password into its config
    with redis.Redis.from_url(new_url) as client:
        assert client.get("kept") == b"yes"
    server.stop()


def test_an_empty_password_file_is_replaced(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "valkey.password").write_text("")
    server = EmbeddedServer(home)
    url = server.ensure()
    try:
        password = server.password_path.read_text().strip()
        assert password and url.startswith(f"redis://:{password}@")
        assert mode(server.password_path) == 0o600
    finally:
        server.stop()


def test_a_live_server_refusing_our_password_is_not_given_a_twin(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = EmbeddedServer(home)
    url = server.ensure()
    try:
        server.password_path.unlink()  # lost while its server runs
        with pytest.raises(EmbeddedServerError, match="refuses the password"):
            server.ensure()
        with redis.Redis.from_url(url) as client:
            assert client.ping()  # still the one server, untouched
    finally:
        with redis.Redis.from_url(url) as client, contextlib.suppress(redis.ConnectionError):
            client.shutdown()
