"""Reaching Redis: the configured URL or the embedded server, with reconnects configured."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from arq.connections import ArqRedis, RedisSettings
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from batchq.errors import RedisUnavailable
from batchq.redact import redact_url
from batchq.settings import Settings
from batchq.store.embedded import ensure_embedded

__all__ = [
    "SentinelURL",
    "arq_pool",
    "arq_redis_settings",
    "connect",
    "follow_master",
    "redis_errors",
    "redis_unavailable",
    "resolve_redis_url",
]

_RETRY_ON = [RedisConnectionError, RedisTimeoutError, OSError]


def resolve_redis_url(settings: Settings) -> str:
    """The configured URL, or the embedded server's (started if need be)."""
    if settings.redis_url:
        return settings.redis_url
    return ensure_embedded(settings.home)


def redis_unavailable(url: str, e: BaseException) -> RedisUnavailable:
    """What went wrong talking to the Redis at ``url``, in words, without its password."""
    if isinstance(e, OutOfMemoryError):
        return RedisUnavailable(
            f"Redis at {redact_url(url)} is out of memory and refuses writes (maxmemory reached; "
            "batchq runs it with noeviction so that nothing is silently dropped)"
        )
    if isinstance(e, ResponseError):
        # Reached, but it said no: a read-only replica, ACLs, a wrong password.
        return RedisUnavailable(f"Redis at {redact_url(url)} refused the command: {str(e)[:300]}")
    return RedisUnavailable(f"cannot reach Redis at {redact_url(url)}: {e}")


@contextlib.contextmanager
def redis_errors(url: str) -> Iterator[None]:
    """Turn redis-py's errors (and raw socket errors) inside the block into
    :class:`RedisUnavailable`."""
    try:
        yield
    except TimeoutError:
        raise  # an OSError too, but one of batchq's own deadlines (wait's timeout)
    except BrokenPipeError:
        # Our output's reader went away (`batchq results B | head`): redis-py reports its own
        # sockets' errors as ConnectionError, so a raw EPIPE here is stdout's.
        raise
    except (RedisError, OSError) as e:
        raise redis_unavailable(url, e) from None


def _retry(retries: int = 20, cap: float = 5.0) -> Retry:
    # A worker must ride out a Redis restart rather than die on the first disconnect.
    return Retry(ExponentialBackoff(cap=cap, base=0.1), retries=retries)


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]``: the master of
    ``service``, found through the listed sentinels (the password is the master's)."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        rest = url.split("://", 1)[1]
        netloc, _, path = rest.partition("/")
        auth, _, hosts = netloc.rpartition("@")
        user, _, password = auth.partition(":") if auth else ("", "", "")
        sentinels = []
        for part in hosts.split(","):
            host, _, port = part.strip().rpartition(":")
            sentinels.append((host or part.strip(), int(port) if host else 26379))
        service, _, db = path.partition("/")
        if not service:
            raise ValueError("a sentinel URL names the service: redis+sentinel://h:26379/mymaster")
        return cls(
            sentinels, service, int(db or 0), unquote(user) or None, unquote(password) or None
        )


class _SentinelConnection(SentinelManagedConnection):
    """A connection to the master that tries each address the sentinels give only once, so
    that every retry asks them again.

    redis-py 5 (arq 0.28 requires < 6) retries the address itself (redis-py#3560, fixed in 6):
    after a failover the client knocked at the dead master for its whole retry budget, 81 s
    here, although the sentinels named the new one after 3 s.
    """

    async def connect_to(self, address: tuple[str, int]) -> None:
        retry, self.retry = self.retry, Retry(NoBackoff(), 0)
        try:
            await super().connect_to(address)  # type: ignore[no-untyped-call]
        finally:
            self.retry = retry


class _SentinelPool(SentinelConnectionPool):
    """A connection to a server that the sentinels no longer name as the master is closed as
    it comes back to the pool, so that its next use goes to the new master."""

    async def release(self, connection: AbstractConnection) -> None:
        address = getattr(connection, "host", None), getattr(connection, "port", None)
        if self.master_address is not None and address != self.master_address:
            await connection.disconnect()
        await super().release(connection)


async def follow_master(client: Redis) -> bool:
    """Ask the sentinels which server is the master; if it is not the one ``client`` uses,
    its connections move over as they fall idle. Returns whether they do (always False for
    a client without Sentinel).

    A dead master needs none of this (the connections break). A live one that a switchover
    (``SENTINEL FAILOVER``) replaced keeps taking writes until Sentinel demotes it, up to
    10 s later, and then throws them away.
    """
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool) or pool.master_address is None:
        return False
    before = pool.master_address
    return bool(await pool.get_master_address() != before)  # type: ignore[no-untyped-call]


class _SentinelMaster(ArqRedis):
    """The master's client, which also closes the connections to the sentinels it used (an
    ``ArqRedis``, so that arq workers can be given it too)."""

    sentinel_client: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_client is not None:
            for s in self.sentinel_client.sentinels:
                await s.aclose()


def connect(url: str, *, retries: int = 20, **kwargs: Any) -> Redis:
    """An asyncio client returning bytes that retries through outages of up to about a minute
    (the default, for long-lived processes); commands a person waits on pass fewer."""
    if url.startswith("redis+sentinel://"):
        s = SentinelURL.parse(url)
        sentinel = Sentinel(s.sentinels, socket_connect_timeout=5)  # type: ignore[no-untyped-call]
        master: _SentinelMaster = sentinel.master_for(
            s.service,
            redis_class=_SentinelMaster,
            connection_pool_class=_SentinelPool,
            connection_class=_SentinelConnection,
            db=s.db,
            username=s.username,
            password=s.password,
            # Each try only asks the sentinels and connects: a short cap finds a new master
            # within a second of its promotion.
            retry=_retry(retries, cap=1.0),
            retry_on_error=_RETRY_ON,
            **kwargs,
        )
        master.sentinel_client = sentinel
        return master
    client: Redis = Redis.from_url(
        url,
        retry=_retry(retries),
        retry_on_error=_RETRY_ON,
        socket_connect_timeout=5,
        health_check_interval=30,
        **kwargs,
    )
    return client


def arq_pool(url: str, *, queue_name: str, serializer: Any, deserializer: Any) -> ArqRedis | None:
    """The client an arq worker should be given for ``url``, or None to let arq build its own
    from :func:`arq_redis_settings`.

    Only Sentinel needs this: arq's own Sentinel client has no retries (it ignores
    ``RedisSettings.retry``), so its worker would die on the first disconnect of a failover
    instead of asking the sentinels for the new master.
    """
    if not url.startswith("redis+sentinel://"):
        return None
    pool = connect(url)
    assert isinstance(pool, ArqRedis)
    pool.job_serializer = serializer
    pool.job_deserializer = deserializer
    pool.default_queue_name = queue_name
    return pool


def arq_redis_settings(url: str) -> RedisSettings:
    """arq's settings for ``url``, with the options of its query string that arq's own parser
    ignores: ``username`` and ``password``, and for TLS ``ssl_ca_certs``, ``ssl_certfile``,
    ``ssl_keyfile``, ``ssl_cert_reqs``, ``ssl_check_hostname``."""
    if url.startswith("redis+sentinel://"):
        s = SentinelURL.parse(url)
        return RedisSettings(
            host=s.sentinels,
            sentinel=True,
            sentinel_master=s.service,
            database=s.db,
            username=s.username,
            password=s.password,
            conn_timeout=5,
            conn_retries=30,
            conn_retry_delay=1,
        )
    base = RedisSettings.from_dsn(url)
    query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    # redis-py takes ``?password=`` (and ``?username=``) as well as the userinfo; arq's parser
    # only the userinfo, so a worker would connect without it.
    username, password = query.get("username", base.username), query.get("password", base.password)
    tls: dict[str, Any] = {
        name: query[name]
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
        if name in query
    }
    if "ssl_check_hostname" in query:
        tls["ssl_check_hostname"] = query["ssl_check_hostname"].lower() in ("1", "true", "yes")
    return dataclasses.replace(
        base,
        retry=_retry(),
        retry_on_error=list(_RETRY_ON),
        conn_timeout=5,
        conn_retries=30,
        conn_retry_delay=1,
        username=username,
        password=password,
        **tls,
    )
