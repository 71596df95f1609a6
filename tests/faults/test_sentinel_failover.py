"""Redis failovers under Sentinel mid-batch: the master SIGKILLed (results it had taken but
not yet replicated die with it) and later restarted, or replaced while it stays up (a
switchover). The workers know Redis only by the sentinel URL: they find the new master by
themselves and finish the batch with exactly one result per item."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import pytest
import redis as redis_sync
from redis.sentinel import Sentinel

from batchq.sim.process import expected_response
from batchq.store.keys import Keys
from tests.procs import Workers, batchq, env_for, sim_stats, simulator, wait_done
from tests.sentinels import SERVICE, SentinelGroup, sentinel_group

pytestmark = pytest.mark.e2e


class Progress:
    """Samples the batch's succeeded count through the sentinels every 50 ms, as a client that
    follows the failover would see it, from a thread."""

    def __init__(self, group: SentinelGroup, prefix: str, batch_id: str) -> None:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [("127.0.0.1", p) for p in group.sentinel_ports], socket_timeout=0.5
        )
        self.master = sentinel.master_for(  # type: ignore[no-untyped-call]
            SERVICE, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self.meta = Keys(prefix).batch(batch_id).meta
        self.samples: list[tuple[float, int]] = []  # (monotonic time, succeeded)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # Asked each time, so that a switchover is seen at once (redis-py then drops
                # its connection to the old master), not when Sentinel demotes the old one.
                self.master.connection_pool.get_master_address()
                n = int(self.master.hget(self.meta, "succeeded") or 0)
                self.samples.append((time.monotonic(), n))
            except (redis_sync.ConnectionError, redis_sync.TimeoutError):
                pass  # the master is gone and not yet replaced
            self._stop.wait(0.05)

    def latest(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def progress_times(self) -> list[float]:
        """When the count was seen to go up (a drop, writes lost in the failover, is not)."""
        return [t for (_, prev), (t, n) in itertools.pairwise(self.samples) if n > prev]

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.master.close()


def lose_unreplicated_results(group: SentinelGroup, results: str) -> set[bytes]:
    """Let the master take results that never reach the replica, as a lagging replica's would
    not (replication is asynchronous); returns some of them. The caller kills the master."""
    old, new = group.master_port, group.replica_ports[0]
    group.cut_off(new)
    with redis_sync.Redis(port=old) as master, redis_sync.Redis(port=new) as replica:
        deadline = time.monotonic() + 10
        while master.hlen(results) < replica.hlen(results) + 8:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        lost = set(master.hkeys(results)) - set(replica.hkeys(results))
    time.sleep(0.1)  # so the workers surely had the replies to these writes
    return lost


@pytest.mark.parametrize("fault", ["sigkill", "switchover"])
def test_workers_follow_a_sentinel_failover_and_finish_the_batch(
    prefix: str, tmp_path: Path, fault: str
) -> None:
    n = 160
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(f"failover {i}") + "\n" for i in range(n)))
    (tmp_path / "redis").mkdir()
    with (
        sentinel_group(tmp_path / "redis") as group,
        simulator(
            tmp_path, "--parallel", "16", "--latency", "0.25", "--eval-tokens-per-s", "0"
        ) as sim,
    ):
        old, new = group.master_port, group.replica_ports[0]
        env = env_for(group.url, prefix, tmp_path / "home", sim)
        bid = batchq(env, "submit", str(src), "--model", "llama3.2").stdout.strip()
        with Workers(env, tmp_path) as workers, Progress(group, prefix, bid) as progress:
            procs = [workers.start("--concurrency", "4") for _ in range(2)]
            deadline = time.monotonic() + 30
            while progress.latest() < n // 4:
                assert time.monotonic() < deadline, workers.logs()
                time.sleep(0.05)
            lost: set[bytes] = set()
            if fault == "sigkill":
                lost = lose_unreplicated_results(group, Keys(prefix).batch(bid).results)
                group.kill(old)
            else:
                # The master stays up and is demoted under the workers' connections.
                with redis_sync.Redis(port=group.sentinel_ports[0]) as s:
                    s.sentinel_failover(SERVICE)
            fault_at = time.monotonic()
            group.wait_for_master(new)
            promoted_in = time.monotonic() - fault_at
            if fault == "sigkill":
                # The old master comes back with its AOF, results the new one never had
                # included. Until Sentinel demotes it, it is a master of stale data that must
                # take no worker's writes; then it resyncs from the new one.
                group.restart(old)
                group.wait_for_replica(old, of=new)
            # Every command, the CLI's included, reaches the new master through the URL.
            final = wait_done(env, bid, timeout=60)
            done_in = time.monotonic() - fault_at
            assert all(p.poll() is None for p in procs), workers.logs()
        stats = sim_stats(sim)
        out = tmp_path / "r.jsonl"
        batchq(env, "results", bid, "-o", str(out))
        if fault == "sigkill":
            # The restarted old master holds what the new one holds, and nothing of its own.
            group.wait_for_replica(old, of=new)
            results = Keys(prefix).batch(bid).results
            with redis_sync.Redis(port=old) as o, redis_sync.Redis(port=new) as m:
                assert o.hgetall(results) == m.hgetall(results)

    assert (final["succeeded"], final["failed"], final["total"]) == (n, 0, n)
    assert (final["queued"], final["running"], final["state"]) == (0, 0, "completed")
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(n))  # one result per item, none lost
    assert [r["response"] for r in rows] == [
        expected_response("llama3.2", f"failover {i}") for i in range(n)
    ]
    # At least once: every prompt reached Ollama, and the items whose result died with the
    # old master went again (the leases they held on the replica lapsed).
    assert set(stats["prompts"]) == {f"failover {i}" for i in range(n)}
    assert len(lost) >= 8 or fault != "sigkill"
    assert all(stats["prompts"][f"failover {int(i)}"] >= 2 for i in lost), lost
    rerun = sum(c - 1 for c in stats["prompts"].values())
    if fault == "switchover":
        # The old master takes writes until Sentinel demotes it, ~10 s later, then drops them:
        # left there, the workers would redo nearly all of the 120 items that remained. They
        # move within a heartbeat (1 s here).
        assert rerun < n // 2, rerun
    ups = progress.progress_times()
    after = [t for t in ups if t > fault_at]
    assert after, "no progress after the failover"
    stall = after[0] - max(t for t in ups if t < fault_at)
    assert stall < 20, stall  # liveness, not speed
    print(
        f"{fault}: replica promoted {promoted_in:.1f} s after it; first result on the new "
        f"master {after[0] - fault_at:.1f} s after it; results stalled {stall:.1f} s; batch "
        f"done {done_in:.1f} s after it; {rerun} request(s) sent again"
    )
