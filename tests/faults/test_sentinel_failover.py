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
from tests.waits import wait_until

pytestmark = pytest.mark.e2e


class Progress:
    """Samples the batch's succeeded count through the sentinels every 50 ms, as a client that
    follows the failover would see it, from a thread."""

    def __init__(self, group: SentinelGroup, prefix: str, batch_id: str) -> None:
        # Timeouts that a stalled machine's replies fit in, or no sample would be taken.
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [("127.0.0.1", p) for p in group.sentinel_ports], socket_timeout=2
        )
        self.master = sentinel.master_for(  # type: ignore[no-untyped-call]
            SERVICE, socket_timeout=2, socket_connect_timeout=2
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


def lose_unreplicated_results(group: SentinelGroup, prefix: str, batch_id: str) -> set[bytes]:
    """Let the master take results that never reach the replica, as a lagging replica's would
    not (replication is asynchronous); returns some of them. The caller kills the master."""
    old, new = group.master_port, group.replica_ports[0]
    keys = Keys(prefix)
    results = keys.batch(batch_id).results
    group.cut_off(new)
    with redis_sync.Redis(port=old) as master, redis_sync.Redis(port=new) as replica:
        wait_until(
            lambda: master.hlen(results) >= replica.hlen(results) + 8,
            what="results the replica does not have",
        )
        lost = set(master.hkeys(results)) - set(replica.hkeys(results))
        since_ms = int(time.time() * 1000)

        # The workers must have had the replies to these writes: one still waiting for its
        # reply when the master dies retries the write on the new master, and its item is
        # not lost. Every reply is in the workers' sockets by now; two heartbeats of a worker
        # after this moment mean its loop has gone round since, reading them. (A fixed 0.1 s
        # was too short for a starved worker process.)
        def heartbeats() -> bool:
            ids = [w.decode() for w in master.zrange(keys.workers, 0, -1)]
            seen = [master.hget(keys.worker_info(w), "seen_at") for w in ids]
            return len(ids) == 2 and all(int(t or 0) > since_ms + 1100 for t in seen)

        wait_until(heartbeats, what="a second heartbeat of each worker")
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
            wait_until(
                lambda: progress.latest() >= n // 4, what="a quarter done", explain=workers.logs
            )
            lost: set[bytes] = set()
            if fault == "sigkill":
                lost = lose_unreplicated_results(group, prefix, bid)
                group.kill(old)
            else:
                # The master stays up and is demoted under the workers' connections.
                with redis_sync.Redis(port=group.sentinel_ports[0]) as s:
                    s.sentinel_failover(SERVICE)
            fault_at = time.monotonic()
            group.wait_for_master(new)  # the only candidate
            promoted_at = time.monotonic()
            if fault == "sigkill":
                group.heal(new)  # the partition ends with the failover
                # The old master comes back with its AOF, results the new one never had
                # included. Until Sentinel demotes it, it is a master of stale data that must
                # take no worker's writes; then it resyncs from the new one. (Should the
                # sentinels fail over again, back to it, it has the new one's data by then.)
                group.restart(old)
                group.wait_settled()
            # Every command, the CLI's included, reaches the new master through the URL.
            final = wait_done(env, bid)
            done_in = time.monotonic() - fault_at
            assert all(p.poll() is None for p in procs), workers.logs()
        stats = sim_stats(sim)
        out = tmp_path / "r.jsonl"
        batchq(env, "results", bid, "-o", str(out))
        if fault == "sigkill":
            # The restarted old master holds what the new one holds, and nothing of its own:
            # whichever of them is the master now, the other one has exactly its results.
            master = group.wait_settled()
            results = Keys(prefix).batch(bid).results
            with redis_sync.Redis(port=old) as o, redis_sync.Redis(port=new) as m:
                held = o.hgetall(results), m.hgetall(results)
            assert held[0] == held[1], master
            assert len(held[0]) == n

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
    # Liveness, not speed: the workers find the new master soon after the sentinels name
    # it (they knocked at the dead one for 80 s before). How soon the sentinels do is theirs.
    assert after[0] - promoted_at < 40, after[0] - promoted_at
    print(
        f"{fault}: replica promoted {promoted_at - fault_at:.1f} s after it; first result on "
        f"the new master {after[0] - fault_at:.1f} s after it; results stalled {stall:.1f} s; "
        f"batch done {done_in:.1f} s after it; {rerun} request(s) sent again"
    )
