"""Typed records: input items, per-item results, one item's progress and batch status."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

__all__ = [
    "MAX_JSON_DEPTH",
    "TERMINAL_BATCH_STATES",
    "AttemptError",
    "BatchState",
    "BatchStatus",
    "Endpoint",
    "Item",
    "ItemError",
    "ItemInfo",
    "ItemResult",
    "ItemState",
    "ItemStatus",
    "deeper_than",
    "may_nest_deeper",
    "tokens_of",
]

# The deepest nesting of arrays and objects a line, and the request made of it, may have (a
# line's own object is level 1), checked at submit; a stored item, one level more, is checked
# again when a worker decodes it. Real requests (a JSON schema, tool parameters) stay within a
# dozen levels; far below Python's recursion limit, so that no decoder or encoder on the way,
# however deep its own stack, runs out of it.
MAX_JSON_DEPTH = 64

Path = tuple[str | int, ...]


def may_nest_deeper(text: str | bytes, limit: int) -> bool:
    """Whether the JSON ``text`` has more than ``limit`` opening brackets (strings included):
    without them it cannot nest deeper than ``limit``, and counting is far cheaper than a walk
    of the decoded value."""
    if isinstance(text, bytes):
        return text.count(b"[") + text.count(b"{") > limit
    return text.count("[") + text.count("{") > limit


def deeper_than(value: Any, limit: int) -> Path | None:
    """The path to an array or object of decoded JSON ``value`` at a level beyond ``limit``
    (``value`` itself, if a container, is level 1), or None. Iterative: any depth."""
    # (node, its level, the entry of its parent, its key there): paths only built for the one.
    Entry = tuple[Any, int, Any, str | int]
    stack: list[Entry] = [(value, 1, None, "")]
    while stack:
        entry = stack.pop()
        node, level = entry[0], entry[1]
        if type(node) is dict:
            pairs: Iterable[tuple[str | int, Any]] = node.items()
        elif type(node) is list:
            pairs = enumerate(node)
        else:
            continue
        if level > limit:
            path: list[str | int] = []
            while entry[2] is not None:
                path.append(entry[3])
                entry = entry[2]
            return tuple(reversed(path))
        for key, child in pairs:
            # Decoded JSON holds exactly these two types.
            if type(child) is dict or type(child) is list:
                stack.append((child, level + 1, entry, key))
    return None


class Endpoint(enum.StrEnum):
    """The kind of request an item is; each backend knows where it takes each kind."""

    GENERATE = "generate"
    CHAT = "chat"
    EMBED = "embed"


class ItemStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class ItemState(enum.StrEnum):
    """Where one item is: waiting, at a worker, or one of the final :class:`ItemStatus`."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class BatchState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    # Finished after its deadline left some items unstarted.
    EXPIRED = "expired"


TERMINAL_BATCH_STATES = frozenset({BatchState.COMPLETED, BatchState.CANCELLED, BatchState.EXPIRED})


@dataclass(frozen=True, slots=True)
class Item:
    """One prompt, normalised: the Ollama request body (with ``model``, without ``stream``)."""

    custom_id: str
    endpoint: Endpoint
    body: dict[str, Any]
    # The OpenAI batch line's url when it differs from the endpoint's own (/v1/responses is
    # chat underneath), for the API's check that lines match the batch; not stored.
    url: str = field(default="", compare=False)

    def dumps(self) -> str:
        """The compact form stored in Redis."""
        return json.dumps(
            {"c": self.custom_id, "e": self.endpoint.value, "b": self.body},
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def loads(cls, raw: str | bytes, *, checked: bool = False) -> Item:
        """An item from its stored form. ``checked`` (the worker, before it sends it on):
        ValueError if it nests deeper than submit allows (:data:`MAX_JSON_DEPTH`, plus the
        level of the stored form itself), however deep, instead of a RecursionError here or
        further on."""
        if not checked:
            d = json.loads(raw)
            return cls(custom_id=d["c"], endpoint=Endpoint(d["e"]), body=d["b"])
        limit = MAX_JSON_DEPTH + 1
        try:
            d = json.loads(raw)
        except RecursionError:
            d = None
        if d is None or (may_nest_deeper(raw, limit) and deeper_than(d, limit) is not None):
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        return cls(custom_id=d["c"], endpoint=Endpoint(d["e"]), body=d["b"])

    @property
    def model(self) -> str:
        return str(self.body["model"])


def tokens_of(metrics: dict[str, Any]) -> tuple[int, int]:
    """(prompt, output) tokens of one reply, from the metrics of Ollama's final chunk."""
    return int(metrics.get("prompt_eval_count") or 0), int(metrics.get("eval_count") or 0)


class ItemError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    message: str
    status_code: int | None = None


class ItemResult(BaseModel):
    """One output line of ``batchq results``."""

    model_config = ConfigDict(extra="forbid")

    index: int
    custom_id: str
    status: ItemStatus
    response: str | None = None
    error: ItemError | None = None
    attempts: int = 0
    model: str | None = None
    metrics: dict[str, Any] | None = None
    # Embedding items only: one vector per input string. Left out of the line otherwise.
    embeddings: list[list[float]] | None = None

    @model_serializer(mode="wrap")
    def _leave_out_no_embeddings(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("embeddings", ...) is None:
            del data["embeddings"]
        return data


class AttemptError(ItemError):
    """One failed attempt of an item, as kept in its error history: the error, which attempt
    it ended and when."""

    attempt: int
    at: str | None = None


class ItemInfo(BaseModel):
    """What ``batchq item --json`` prints: one item's progress, while the batch runs too.

    ``errors`` lists its failed attempts, oldest first (the last few; the final error of a
    failed item is the last one), and ``result`` is the line ``batchq results`` writes for it
    once it is final.
    """

    model_config = ConfigDict(extra="forbid")

    batch_id: str
    index: int
    custom_id: str
    status: ItemState
    attempts: int
    errors: list[AttemptError]
    result: ItemResult | None


class BatchStatus(BaseModel):
    """What ``batchq status --json`` prints. The six counts always add up to ``total``;
    ``retried`` (attempts sent again) and the tokens of succeeded items are running totals."""

    model_config = ConfigDict(extra="forbid")

    batch_id: str
    name: str | None
    metadata: dict[str, str] = Field(default_factory=dict)
    state: BatchState
    total: int
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    expired: int = 0
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    retried: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    deadline: str | None = None
    # The completion hook (submit --notify), None without one: waiting (for the batch to
    # finish), pending, sending, delivered, failed, or unknown (its sender died mid-POST).
    notify: str | None = None
    # The dispatch order (batchq.store.stride): higher priorities first; within one, shares of the
    # dispatch proportional to the weights.
    priority: int = 0
    weight: float = 1.0

    @property
    def done(self) -> int:
        """Items that are final: the four final counts."""
        return self.succeeded + self.failed + self.cancelled + self.expired
