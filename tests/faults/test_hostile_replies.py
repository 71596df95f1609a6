"""A real worker against a hostile Ollama stand-in (tests/hostile_ollama.py, its own process):
each reply that breaks a bound fails its item at once with its own error.type, frees the slot
for the next item, and the batch finishes; a stream left open after its final chunk and absurd
token counts still give a clean success."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from batchq.backends.bounds import MAX_ERROR_CHARS
from tests.conftest import free_port
from tests.procs import Workers, batchq, env_for, ollama_process, wait_done

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]

# custom_id -> (status, error.type, attempts)
EXPECTED = {
    "runaway-1": ("failed", "reply_too_long", 1),
    "runaway-2": ("failed", "reply_too_long", 1),
    "runaway-3": ("failed", "reply_too_long", 1),
    "trickle": ("failed", "reply_deadline", 1),
    "endless_line": ("failed", "line_too_long", 1),
    "huge_body": ("failed", "body_too_large", 1),
    "error_body": ("failed", "server_error", 2),  # a 500: retried, as before
    "done_open": ("succeeded", None, 1),
    "huge_count": ("succeeded", None, 1),
    "normal": ("succeeded", None, 1),
}


def hostile_ollama(log_dir: Path, *args: str) -> contextlib.AbstractContextManager[str]:
    args = ("tests.hostile_ollama", *args)
    return ollama_process(list(args), log_dir / "hostile.log", free_port(), cwd=ROOT)


def _line(custom_id: str) -> str:
    word = custom_id.split("-")[0]
    if word == "huge_body":
        return json.dumps({"custom_id": custom_id, "input": word})
    return json.dumps({"custom_id": custom_id, "prompt": f"{word} now"})


def test_each_breach_fails_its_item_and_the_batch_finishes(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    with hostile_ollama(tmp_path, "--piece", "1024", "--size", str(10 << 20)) as url:
        env = env_for(
            valkey_url,
            prefix,
            tmp_path / "home",
            url,
            BATCHQ_MAX_ATTEMPTS="2",
            BATCHQ_TIMEOUT="60",
            BATCHQ_REPLY_DEADLINE="3",
            BATCHQ_REPLY_MAX_TEXT_BYTES="200000",
            BATCHQ_REPLY_MAX_LINE_BYTES=str(1 << 20),
            BATCHQ_REPLY_MAX_BODY_BYTES=str(2 << 20),
        )
        src = tmp_path / "hostile.jsonl"
        src.write_text("".join(_line(c) + "\n" for c in EXPECTED))
        bid = batchq(env, "submit", str(src), "--model", "m").stdout.strip()
        with Workers(env, tmp_path) as workers:
            # Two slots for ten items: each breach must give its slot back for the batch to end.
            workers.start("--concurrency", "2", "--ollama-queue", "0")
            final = wait_done(env, bid, timeout=120)
            huge_count = json.loads(batchq(env, "item", bid, "huge_count", "--json").stdout)
        out = tmp_path / "r.jsonl"
        batchq(env, "results", bid, "-o", str(out))
    rows = {r["custom_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    got = {c: (r["status"], (r["error"] or {}).get("type"), r["attempts"]) for c, r in rows.items()}
    assert got == EXPECTED
    assert (final["succeeded"], final["failed"]) == (3, 7)
    for c in ("trickle", "huge_body", "runaway-1", "endless_line"):
        assert "BATCHQ_REPLY_" in rows[c]["error"]["message"]
    err = rows["error_body"]["error"]["message"]
    assert err.endswith("characters]") and len(err) < MAX_ERROR_CHARS + 40
    assert rows["done_open"]["response"] == "complete"
    # 10**30 prompt tokens, clamped where the reply is read: the result and the batch's sums
    # agree, and no error was left behind in the item's history.
    assert rows["huge_count"]["metrics"]["prompt_eval_count"] == 2**31 - 1
    assert final["tokens_in"] == 2**31 - 1 + 3 + 3
    assert (huge_count["status"], huge_count["errors"]) == ("succeeded", [])
    log = workers.logs()
    assert "unexpected error" not in log and "Traceback" not in log, log
