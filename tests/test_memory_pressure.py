"""When Redis refuses writes (maxmemory with noeviction), submit fails cleanly: one line, a
non-zero exit, and no half-submitted batch left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis

from tests.conftest import valkey_process


def test_submit_into_a_full_redis_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "big.jsonl"
    with src.open("w") as f:
        for i in range(20_000):
            f.write(json.dumps(f"prompt {i} " + "x" * 500) + "\n")
    with valkey_process("--maxmemory", "4mb", "--maxmemory-policy", "noeviction") as port:
        url = f"redis://127.0.0.1:{port}/0"
        proc = subprocess.run(
            [sys.executable, "-m", "batchq", "submit", str(src), "--model", "m", "--redis", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        client = redis.Redis(port=port)
        keys = client.keys("*")
        client.close()
    assert proc.returncode == 1
    assert proc.stderr.startswith("batchq: error: Redis at redis://127.0.0.1")
    assert "is out of memory and refuses writes" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert keys == []
