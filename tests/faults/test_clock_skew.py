"""Workers whose clocks disagree by hours, as on machines without NTP: leases, due times and
every recorded time follow the Redis server's clock, so none of them stalls, steals or doubles
work, and a dead worker's items come back as fast whatever its clock said."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.procs import Workers, batchq, env_for, sim_stats, simulator, skewed, wait_done
from tests.waits import wait_until

pytestmark = pytest.mark.e2e


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_workers_hours_apart_share_leases_and_stamp_server_time(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    with simulator(tmp_path, "--parallel", "32", "--latency", "0.5") as sim:
        env = env_for(valkey_url, prefix, tmp_path / "home", sim, BATCHQ_TIMEOUT="600")
        ahead, behind = skewed(env, "+2h"), skewed(env, "-2h")
        src = tmp_path / "p.jsonl"
        n = 60
        src.write_text("".join(json.dumps(f"skew {i}") + "\n" for i in range(n)))
        submitted = time.time()
        bid = batchq(env, "submit", str(src), "--model", "llama3.2").stdout.strip()
        with Workers(env, tmp_path) as workers:
            # The one two hours ahead dies mid-request: by its clock its leases last two hours.
            victim = workers.start("--concurrency", "4", env=ahead)
            workers.start("--concurrency", "4", env=behind)
            wait_until(lambda: sim_stats(sim)["in_flight"] >= 8, what="8 requests at Ollama")
            victim.kill()
            killed_at = time.monotonic()
            final = wait_done(env, bid)
            recovered_in = time.monotonic() - killed_at
            logs = workers.logs()
        stats = sim_stats(sim)

    assert (final["succeeded"], final["failed"], final["total"]) == (n, 0, n), logs
    out = tmp_path / "r.jsonl"
    batchq(env, "results", bid, "-o", str(out))
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(n))
    assert all(c <= 2 for c in stats["prompts"].values())
    # Times are the server's (this machine's, here), whichever worker stamped them.
    created, started, finished = (
        _epoch(final[k]) for k in ("created_at", "started_at", "finished_at")
    )
    assert submitted - 2 <= created <= started <= finished <= time.time() + 2, final
    # Both said so in their logs.
    assert "ahead of the Redis server's" in logs and "behind the Redis server's" in logs
    # By the victim's clock its leases had two hours to run; the bound is liveness, not speed.
    assert recovered_in < 120, recovered_in
    print(f"recovery: all items final {recovered_in:.1f} s after the SIGKILL")
