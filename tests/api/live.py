"""What the API tests share: the key their ``batchq serve`` takes, input lines, and waiting
for a batch's status."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from openai import OpenAI
from openai.types import Batch

from tests.conftest import free_port
from tests.waits import wait_for_value, wait_until

KEY = "sk-batchq-" + secrets.token_hex(8)


@dataclass(frozen=True)
class Served:
    url: str
    env: dict[str, str]
    home: Path


@contextlib.contextmanager
def serving(env: dict[str, str], home: Path) -> Iterator[Served]:
    """A ``batchq serve`` process with ``env``, once it answers; checks it exits cleanly."""
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


def chat_lines(n: int, tag: str = "req") -> bytes:
    lines = [
        {
            "custom_id": f"{tag}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "llama3.2",
                "messages": [{"role": "user", "content": f"question {i}"}],
                "max_tokens": 20,
            },
        }
        for i in range(n)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def finished(client: OpenAI, batch_id: str, want: str, timeout: float = 120) -> Batch:
    return wait_for_value(
        lambda: client.batches.retrieve(batch_id),
        lambda b: b.status == want,
        timeout=timeout,
        interval=0.1,
        what=f"{batch_id} {want}",
    )
