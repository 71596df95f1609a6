"""What the API tests share: the key their ``batchq serve`` takes, input lines, and waiting
for a batch's status."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from openai import OpenAI
from openai.types import Batch

from tests.waits import wait_for_value

KEY = "sk-batchq-" + secrets.token_hex(8)


@dataclass(frozen=True)
class Served:
    url: str
    env: dict[str, str]
    home: Path


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
