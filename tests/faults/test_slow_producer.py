"""``slow_producer | batchq submit -``: a real submit process fed by a producer slower than the
staging TTL. Pauses shorter than the TTL between chunks lose nothing, however long the whole
submission takes; one pause longer than it fails the submission in one line and leaves nothing
in Redis, instead of committing a batch whose first items are gone."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.procs import env_for
from tests.waits import wait_for_value, wait_until

pytestmark = pytest.mark.e2e

CHUNK = 2


def submit(redis_url: str, prefix: str, tmp_path: Path, ttl: float) -> subprocess.Popen[str]:
    env = env_for(
        redis_url,
        prefix,
        tmp_path / "home",
        "http://127.0.0.1:9",
        BATCHQ_STAGING_TTL=str(ttl),
        BATCHQ_SUBMIT_CHUNK=str(CHUNK),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "batchq", "submit", "-", "--model", "m", "--json"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def send_chunk(proc: subprocess.Popen[str], start: int) -> None:
    assert proc.stdin is not None
    proc.stdin.write("".join(json.dumps(f"slow {i}") + "\n" for i in range(start, start + CHUNK)))
    proc.stdin.flush()


def staged(r: redis.Redis, prefix: str) -> dict[bytes, int]:
    """The staging hash (before the commit, the prefix's only items hash) → its length."""
    return {k: int(r.hlen(k)) for k in r.scan_iter(match=f"{prefix}:b:*:items")}  # type: ignore[arg-type]


def test_a_producer_slower_than_the_ttl_in_total_loses_nothing(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    ttl = 2.0
    chunks = 5
    with redis.Redis.from_url(redis_url) as r, submit(redis_url, prefix, tmp_path, ttl) as proc:
        before: dict[bytes, int] = {}
        for n in range(chunks):
            send_chunk(proc, n * CHUNK)

            def arrived(got: dict[bytes, int], seen: dict[bytes, int] = before) -> bool:
                return bool(got) and got != seen

            now = wait_for_value(lambda: staged(r, prefix), arrived, what=f"chunk {n + 1} staged")
            assert list(now.values()) == [(n + 1) * CHUNK]  # nothing expired
            before = now
            if n < chunks - 1:
                # The producer's pause (the fault, not a wait for anything): half the TTL.
                # Four of them outlast the TTL twice over, so without its renewal the first
                # chunks expire before the last one arrives.
                time.sleep(ttl / 2)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        bid = json.loads(out)["batch_id"]
        assert json.loads(out)["total"] == chunks * CHUNK
        items = r.hgetall(f"{prefix}:b:{bid}:items")
        assert sorted(int(k) for k in items) == list(range(chunks * CHUNK))
        assert r.pttl(f"{prefix}:b:{bid}:items") == -1  # committed: kept


def test_a_pause_longer_than_the_ttl_fails_in_one_line_and_leaves_nothing(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    with redis.Redis.from_url(redis_url) as r, submit(redis_url, prefix, tmp_path, 1.0) as proc:
        send_chunk(proc, 0)
        wait_until(lambda: list(staged(r, prefix).values()) == [CHUNK], what="a chunk staged")
        wait_until(lambda: staged(r, prefix) == {}, what="the staged chunk expired")
        send_chunk(proc, CHUNK)
        out, err = proc.communicate(timeout=60)
        assert (proc.returncode, out) == (1, "")
        assert err == (
            "batchq: error: submission incomplete: staged 2 of 4 items (the staging area "
            "expired: a pause in the input outlasted BATCHQ_STAGING_TTL, 1 s; raise it or "
            "submit faster)\n"
        )
        assert list(r.scan_iter(match=f"{prefix}:*")) == []
