"""``batchq home``: the embedded server that any command starts, shown and stopped, with real
processes and a BATCHQ_HOME of the test's own; and what ``list`` says of a new home."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import redis as redis_sync

from batchq.store.embedded import EmbeddedServer
from tests.procs import batchq


def embedded_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHQ_", "OLLAMA_"))}
    env.pop("REDIS_URL", None)
    env.update(BATCHQ_HOME=str(home), OLLAMA_HOST="http://127.0.0.1:9")
    return env


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"  # exited, not reaped by its parent


def test_home_stop_ends_the_embedded_server_and_a_new_home_says_so(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = embedded_env(home)
    try:
        new = f"no batches yet: BATCHQ_HOME={home} is new; submit one with `batchq submit`\n"
        assert batchq(env, "list").stdout == new
        assert batchq(env, "status").stdout == new
        assert json.loads(batchq(env, "list", "--json").stdout) == []
        pid = int((home / "valkey.pid").read_text())
        port = int((home / "valkey.port").read_text())
        password = (home / "valkey.password").read_text().strip()
        shown = json.loads(batchq(env, "home", "--json").stdout)
        url = f"redis://***@127.0.0.1:{port}"  # the password stays in its file
        assert shown == {"home": str(home), "running": True, "url": url}
        assert (
            batchq(env, "home").stdout == f"BATCHQ_HOME={home}: embedded server running at {url}\n"
        )

        out = batchq(env, "home", "stop").stdout
        assert out.startswith(f"stopped the embedded server at {url} ") and password not in out
        assert gone(pid)  # the command returns once the process is gone, not before
        with pytest.raises(redis_sync.ConnectionError):
            redis_sync.Redis(port=port, socket_connect_timeout=2).ping()
        assert (
            batchq(env, "home", "stop").stdout
            == f"no embedded server runs for BATCHQ_HOME={home}\n"
        )
        assert batchq(env, "home").stdout == f"BATCHQ_HOME={home}: embedded server not running\n"

        # Any command starts it again, on the same data: a home with data is not new.
        batchq(env, "submit", "-", "--model", "m", input='"p"\n')
        assert "no batches" not in batchq(env, "list").stdout
        assert batchq(env, "list", "--prefix", "other").stdout == "no batches\n"
    finally:
        EmbeddedServer(home).stop()
