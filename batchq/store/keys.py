"""Every Redis key batchq writes, in one place.

All of batchq's own keys start with the configurable prefix, so several deployments can share
a server. arq's job keys (``arq:job:<id>`` and friends) cannot be prefixed — only its queue
name can — but every job id embeds an unguessable batch id, so they cannot collide either.

| key | type | content |
|---|---|---|
| ``{p}:batches`` | ZSET | batch id → creation time (ms); the index behind ``batchq list`` |
| ``{p}:ready`` | ZSET | priority levels that have ready batches → the priority (store.stride) |
| ``{p}:ready:{prio}`` | ZSET | ready batches of one priority → pass (stride scheduling) |
| ``{p}:active`` | LIST | before priorities: the round-robin list; the dispatcher empties it |
| ``{p}:open`` | ZSET | unfinished batches → time of their last progress (ms), for repair |
| ``{p}:deadlines`` | ZSET | batches with a deadline not yet acted on → the deadline (ms) |
| ``{p}:hooks`` | ZSET | finished batches whose completion hook is due → when (ms) |
| ``{p}:workers`` | ZSET | worker id → heartbeat deadline (ms) |
| ``{p}:worker-slots`` | HASH | worker id → its slots (times embed_batch while it embeds), summed |
| ``{p}:worker:{id}`` | HASH | a worker's own account, rewritten each heartbeat (store.presence) |
| ``{p}:leases`` | ZSET | job id → lease deadline (ms) of each running item |
| ``{p}:repair-lock`` | STRING | held by the worker repairing idle batches |
| ``{p}:ep:{e}:limits`` | HASH | global limits of an Ollama endpoint: rate, concurrency |
| ``{p}:ep:{e}:tat`` | STRING | GCRA theoretical arrival time (ms) of the endpoint's rate |
| ``{p}:ep:{e}:inflight`` | ZSET | token → slot lease deadline (ms): the endpoint's concurrency |
| ``{p}:ep:{e}:ttat`` | STRING | arrival time (ms) of the endpoint's tokens-per-minute debt |
| ``{p}:serving`` | HASH | endpoint id → ``model|ms|loads``: a host's model, when said, its loads |
| ``{p}:models`` | HASH | model with ready work → when a host last served it, or its work came |
| ``{p}:auto:{e}:{m}`` | HASH | self-tuned limit of endpoint e for model m (store.autolimit) |
| ``{p}:auto:{e}:{m}:inflight`` | ZSET | token → slot lease deadline (ms) under that limit |
| ``{p}:auto-limits`` | SET | every ``{p}:auto:{e}:{m}`` key, for the readers (read_auto_limits) |
| ``{p}:b:{id}`` | HASH | batch metadata and its O(1) counters |
| ``{p}:b:{id}:items`` | HASH | index → item (JSON) |
| ``{p}:b:{id}:results`` | HASH | index → result (JSON); written once (HSETNX) |
| ``{p}:b:{id}:redo`` | LIST | indices to dispatch again before the cursor moves on |
| ``{p}:b:{id}:tries`` | HASH | index → attempts so far, while the item is not final |
| ``{p}:b:{id}:ids`` | HASH | custom id → index, for the ids that are not the index itself |
| ``{p}:b:{id}:errors`` | HASH | index → the item's last failed attempts (JSON), oldest first |
| ``{p}:b:{id}:prior`` | HASH | index → attempts of the item's earlier runs (``batchq retry``) |
| ``{p}:b:{id}:retrying`` | LIST | indices taken out of the results by a retry in progress |
| ``{p}:b:{id}:reruns`` | LIST | indices retry took out of the results, in order, for as_completed |
| ``{p}:b:{id}:codes`` | STRING | many models: byte i is item i's model (its place in ``models``) |
| ``{p}:b:{id}:park:{c}`` | LIST | many models: indices of model ``c`` the cursor passed, in order |
| ``{p}:files`` | ZSET | OpenAI API file id → creation time (ms, see oai:seq) |
| ``{p}:file:{id}`` | HASH | an OpenAI API file's metadata (its content is on disk: batchq.api) |
| ``{p}:oai:seq`` | STRING | a counter that orders API files and batches made in one millisecond |
| ``{p}:oai:batches`` | ZSET | OpenAI API batch id → creation time (ms, see oai:seq) |
| ``{p}:oai:batch:{id}`` | HASH | an OpenAI API batch: its input file, batchq batch, output files |
| ``{p}:oai:batch:{id}:fin`` | STRING | held by the ``serve`` process writing its output files |
| ``{p}:ant:batches`` | ZSET | Anthropic message batch id → creation time (ms, see oai:seq) |
| ``{p}:ant:batch:{id}`` | HASH | an Anthropic message batch: its batchq batch, its times |
| ``{p}:b:{batch_...}`` | HASH | an API batch refused at validation: its webhook's state only |
| ``{p}:oai:open`` | ZSET | API batches with a webhook, not yet announced → last looked at (ms) |
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ARQ_IN_PROGRESS_PREFIX",
    "ARQ_JOB_PREFIX",
    "ARQ_RESULT_PREFIX",
    "ARQ_RETRY_PREFIX",
    "BATCH_ID_RE",
    "BatchKeys",
    "Keys",
    "job_id",
    "parse_job_id",
]

# arq 0.28's fixed key prefixes (arq.constants); the dispatcher's Lua writes these directly.
ARQ_JOB_PREFIX = "arq:job:"
ARQ_IN_PROGRESS_PREFIX = "arq:in-progress:"
ARQ_RETRY_PREFIX = "arq:retry:"
ARQ_RESULT_PREFIX = "arq:result:"

BATCH_ID_RE = re.compile(r"^b_[0-9a-f]{16}$")


def job_id(batch_id: str, index: int) -> str:
    return f"{batch_id}:{index}"


def parse_job_id(value: str) -> tuple[str, int]:
    batch_id, _, index = value.rpartition(":")
    return batch_id, int(index)


@dataclass(frozen=True, slots=True)
class BatchKeys:
    meta: str
    items: str
    results: str
    redo: str
    tries: str
    ids: str
    errors: str
    prior: str
    retrying: str
    reruns: str
    codes: str


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def batches(self) -> str:
        return f"{self.prefix}:batches"

    @property
    def ready(self) -> str:
        """The ready levels; the scripts reach a level's batches as ``ready .. ':' .. prio``."""
        return f"{self.prefix}:ready"

    def ready_level(self, priority: int) -> str:
        return f"{self.ready}:{priority}"

    @property
    def legacy_active(self) -> str:
        return f"{self.prefix}:active"

    @property
    def committed(self) -> str:
        """How many batches were committed: each submit counts itself on the connection that
        then waits for the AOF (see BatchStore.submit)."""
        return f"{self.prefix}:committed"

    @property
    def open(self) -> str:
        return f"{self.prefix}:open"

    @property
    def hooks(self) -> str:
        return f"{self.prefix}:hooks"

    @property
    def deadlines(self) -> str:
        return f"{self.prefix}:deadlines"

    @property
    def repair_lock(self) -> str:
        return f"{self.prefix}:repair-lock"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def worker_slots(self) -> str:
        return f"{self.prefix}:worker-slots"

    def worker_info(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    @property
    def leases(self) -> str:
        return f"{self.prefix}:leases"

    @property
    def queue(self) -> str:
        return f"{self.prefix}:arq:queue"

    @property
    def serving(self) -> str:
        return f"{self.prefix}:serving"

    @property
    def models(self) -> str:
        return f"{self.prefix}:models"

    def endpoint_limits(self, eid: str) -> str:
        return f"{self.prefix}:ep:{eid}:limits"

    def endpoint_tat(self, eid: str) -> str:
        return f"{self.prefix}:ep:{eid}:tat"

    def endpoint_inflight(self, eid: str) -> str:
        return f"{self.prefix}:ep:{eid}:inflight"

    def endpoint_token_tat(self, eid: str) -> str:
        return f"{self.prefix}:ep:{eid}:ttat"

    @property
    def files(self) -> str:
        return f"{self.prefix}:files"

    def file(self, file_id: str) -> str:
        return f"{self.prefix}:file:{file_id}"

    @property
    def oai_seq(self) -> str:
        return f"{self.prefix}:oai:seq"

    @property
    def oai_batches(self) -> str:
        return f"{self.prefix}:oai:batches"

    def oai_batch(self, batch_id: str) -> str:
        return f"{self.prefix}:oai:batch:{batch_id}"

    def oai_finalizing(self, batch_id: str) -> str:
        return f"{self.prefix}:oai:batch:{batch_id}:fin"

    @property
    def ant_batches(self) -> str:
        return f"{self.prefix}:ant:batches"

    def ant_batch(self, batch_id: str) -> str:
        return f"{self.prefix}:ant:batch:{batch_id}"

    def auto_limit(self, eid: str, mid: str) -> str:
        """``eid``: :func:`batchq.store.admission.endpoint_id`; ``mid``: the model's
        :func:`batchq.store.autolimit.model_id`."""
        return f"{self.prefix}:auto:{eid}:{mid}"

    def auto_inflight(self, eid: str, mid: str) -> str:
        return f"{self.prefix}:auto:{eid}:{mid}:inflight"

    @property
    def auto_limits(self) -> str:
        return f"{self.prefix}:auto-limits"

    @property
    def oai_open(self) -> str:
        return f"{self.prefix}:oai:open"

    def batch_prefix(self) -> str:
        """What the Lua scripts prepend to a batch id to reach that batch's keys."""
        return f"{self.prefix}:b:"

    def batch(self, batch_id: str) -> BatchKeys:
        base = f"{self.prefix}:b:{batch_id}"
        return BatchKeys(
            meta=base,
            items=f"{base}:items",
            results=f"{base}:results",
            redo=f"{base}:redo",
            # The scripts reach these as meta .. ':results' etc. for batches named at run time.
            tries=f"{base}:tries",
            ids=f"{base}:ids",
            errors=f"{base}:errors",
            prior=f"{base}:prior",
            retrying=f"{base}:retrying",
            reruns=f"{base}:reruns",
            # Parked indices of model code c: the scripts reach them as meta .. ':park:' .. c.
            codes=f"{base}:codes",
        )
