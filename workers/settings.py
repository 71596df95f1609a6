"""arq worker settings for batchq: ``arq workers.WorkerSettings`` starts a working worker,
configured from the environment; ``batchq worker`` builds the same from its flags (and runs
:class:`~workers.worker.BatchqWorker`, re-exported here). The job codec is JSON, never pickle."""

from __future__ import annotations

import json
from typing import Any, cast

from arq.worker import func

from batchq.records import MAX_JSON_DEPTH, may_nest_deeper
from batchq.settings import Settings
from batchq.store.connection import arq_pool, arq_redis_settings, resolve_redis_url
from batchq.store.dispatch import JOB_FUNCTION
from batchq.store.keys import Keys
from workers import embed_groups
from workers.inference import REJECT_FUNCTION, reject_job, run_item
from workers.lifecycle import after_job_end, shutdown, startup_hook

__all__ = ["json_dumps", "json_loads", "settings_class", "worker_kwargs"]


_ARQ_MAX_TRIES = 1_000_000


def json_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def json_loads(raw: bytes) -> Any:
    """JSON, never pickle: whoever can write to Redis must not be able to run code on workers.

    A payload that is not a batchq job (a planted pickle, JSON nested too deeply to decode, a
    field missing) is not run; it becomes a call of :func:`~workers.inference.reject_job` with
    the reason, which records the item of the job's id as failed at once, so the item still
    gets its one result instead of vanishing in arq's error path. Never raises.
    """
    # The dispatcher's payload nests two levels; one far deeper is not decoded at all.
    if may_nest_deeper(raw, MAX_JSON_DEPTH):
        return _rejected(f"nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        d = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _rejected("is not JSON")
    if not (isinstance(d, dict) and _is_job(d)):
        return _rejected("is not a batchq job (f, a, k, t and et)")
    return d


def _is_job(d: dict[str, Any]) -> bool:
    # Everything arq reads of it (f, a, k, t, et), of the types the dispatcher writes: a
    # KeyError in arq would drop the job without a result.
    a, t = d.get("a"), d.get("t", False)
    return (
        d.get("f") == JOB_FUNCTION
        and type(a) is list
        and len(a) == 2
        and type(a[0]) is str
        and type(a[1]) is int
        and a[1] >= 0
        and d.get("k") == {}
        and (t is None or type(t) is int)
        and type(d.get("et")) is int
    )


def _rejected(reason: str) -> dict[str, Any]:
    return {"f": REJECT_FUNCTION, "a": [reason], "k": {}, "t": None, "et": 0}


def worker_kwargs(settings: Settings, redis_url: str | None = None) -> dict[str, Any]:
    url = redis_url or resolve_redis_url(settings)
    queue = Keys(settings.prefix).queue
    kwargs = {
        "functions": [
            func(
                cast(Any, run_item),
                name=JOB_FUNCTION,
                timeout=settings.job_timeout,
                # batchq counts attempts itself and records the failure; arq giving up first
                # would drop the item without a result (runs while Ollama is down do not
                # count as attempts, so arq's own count may grow large).
                max_tries=_ARQ_MAX_TRIES,
            ),
            func(cast(Any, reject_job), name=REJECT_FUNCTION, max_tries=1),
        ],
        "redis_settings": arq_redis_settings(url),
        "queue_name": queue,
        "max_jobs": embed_groups.max_jobs(settings),
        "job_timeout": settings.job_timeout,
        # Results live in batchq's own hash; arq's copy would double Redis memory.
        "keep_result": 0,
        "poll_delay": settings.poll_delay,
        # The dispatcher keeps the queue short, so reading all of it costs nothing, and a small
        # read limit would cap the concurrency of all workers together.
        "queue_read_limit": 100_000,
        "job_serializer": json_dumps,
        "job_deserializer": json_loads,
        "on_startup": startup_hook(settings),
        "on_shutdown": shutdown,
        "after_job_end": after_job_end,
        "health_check_interval": 30,
        # On SIGTERM stop taking jobs and let running requests finish for this long; arq
        # cancels and requeues whatever is still running after it.
        "job_completion_wait": settings.shutdown_grace,
        "max_tries": _ARQ_MAX_TRIES,
    }
    pool = arq_pool(url, queue_name=queue, serializer=json_dumps, deserializer=json_loads)
    if pool is not None:
        kwargs["redis_pool"] = pool
    return kwargs


def settings_class(settings: Settings | None = None) -> type:
    """A class in the shape arq's CLI reads (attributes in the class ``__dict__``)."""
    return type("WorkerSettings", (), worker_kwargs(settings or Settings()))


def __getattr__(name: str) -> Any:
    # Built on first access, not at import: resolving Redis may start the embedded server.
    if name == "WorkerSettings":
        return settings_class()
    raise AttributeError(name)
