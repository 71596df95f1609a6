"""Batched embeddings: embedding items of one model and options share one ``/api/embed``.

Ollama embeds all the inputs of one request as one batch on the GPU, so a request of 64 short
texts costs little more than a request of one; one request per item leaves both the GPU and
batchq's own per-request costs to cap the throughput.

How a group forms. An embedding job that holds one of the worker's Ollama slots leads: it
reads the stored items of the worker's jobs that wait for a slot (one pipelined round trip,
each job read once) and takes out of the wait those whose request differs from its own only in
``input``, in the order they were claimed, up to ``embed_batch`` inputs in all. Each job taken
(a rider) begins its own item (its lease, its attempt), joins, and the leader sends one request
with every member's inputs. Each member gets back its own vectors, or its own error, and
records its outcome through the ordinary per-item paths (:mod:`workers.inference`): results,
attempts, retries and errors stay per item, and a member whose item turned final meanwhile
(a duplicate delivery, a cancel) simply does not join.

A failed group. Refused for its content (a 4xx but an unknown model, or a reply past
``reply_max_body_bytes``), a group is split in halves, each sent again, down to the items at
fault, which fail alone with their own error; the requests of the search are the same attempt,
so an item's attempts are what they would be had it been sent alone. Any other failure (a
timeout, a 5xx, Ollama down) is each member's own, retried or failed as a single item's is.

Claiming enough. A group can only take jobs the worker holds, and the dispatch window holds
about ``dispatch_window`` times the workers' registered slots. While the worker's latest item
is an embedding, and embeddings are in a request or one began in the last two seconds, it
claims up to ``embed_batch`` jobs per slot and registers that many slots, so every slot can
carry a full group; once it meets another kind of item, or embeddings stop coming, it goes
back to its usual claims (``jobs_per_worker``), so it does not sit on generations other
workers could run.

Each member's reply has the group's durations and a share of its ``prompt_eval_count`` in
proportion to the characters of its inputs (Ollama reports only the total), so a batch's token
count stays exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from batchq import clock
from batchq.backends.base import Reply
from batchq.backends.pool import Host
from batchq.errors import BackendError
from batchq.records import Endpoint, Item
from batchq.settings import Settings
from batchq.store.keys import Keys, parse_job_id

__all__ = ["SPLIT_KINDS", "EmbedGroups", "Group", "Sent", "group_key", "max_jobs", "split_reply"]

# What one request gives a job: the reply and the host that answered, or the error.
Sent = tuple[Reply, Host] | BackendError
Send = Callable[[Item], Awaitable[Sent]]

# Failures of a group that may be one member's fault: split to find it. A 404 (unknown model),
# a deadline, a broken connection are every member's alike.
SPLIT_KINDS = frozenset({"invalid_request", "body_too_large"})

# How long after its latest embedding began a worker still claims for groups: far longer than
# the gap between two items of a batch of embeddings, and short next to a batch of generations.
_ACTIVE_S = 2.0

# Waiting jobs a leader reads per group, as a multiple of the group's size: enough to fill it
# when other kinds of item are mixed in, bounded however many jobs wait.
_PEEK_FACTOR = 2


def group_key(item: Item) -> str | None:
    """What an item's request must share with others to go in one request with them: all of
    its body but ``input``; None when it is not an embedding."""
    if item.endpoint is not Endpoint.EMBED:
        return None
    rest = {k: v for k, v in item.body.items() if k != "input"}
    return json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _inputs(item: Item) -> list[str]:
    texts = item.body.get("input")
    return texts if isinstance(texts, list) else [str(texts)]


def max_jobs(settings: Settings) -> int:
    """arq's ``max_jobs``: the usual jobs, plus a full group's worth for every Ollama slot."""
    extra = settings.max_in_flight * (settings.embed_batch - 1)
    return settings.jobs_per_worker + extra


@dataclass(slots=True)
class _Member:
    jid: str
    item: Item
    inputs: list[str]
    outcome: asyncio.Future[Sent]


@dataclass(eq=False, slots=True)
class Group:
    """One request's members; riders taken out of the wait are pending until they join (or
    leave, when their item turned out final, cancelled or paused as they began it)."""

    key: str
    members: list[_Member] = field(default_factory=list)
    pending: set[str] = field(default_factory=set)
    # Its request is made (or its leader cancelled): a rider joining now gets nothing sent.
    closed: bool = False
    _settled: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, jid: str, item: Item) -> asyncio.Future[Sent]:
        fut: asyncio.Future[Sent] = asyncio.get_running_loop().create_future()
        if self.closed:
            fut.cancel()
        else:
            self.members.append(_Member(jid, item, _inputs(item), fut))
        self._done_with(jid)
        return fut

    def expect(self, jid: str) -> None:
        """A rider taken out of the wait: the request waits for it to join or leave."""
        self.pending.add(jid)
        self._settled.clear()

    def leave(self, jid: str) -> None:
        """A rider that will not join; nothing if it joined already."""
        self._done_with(jid)

    def _done_with(self, jid: str) -> None:
        self.pending.discard(jid)
        if not self.pending:
            self._settled.set()

    async def ready(self) -> None:
        if self.pending:
            await self._settled.wait()


class EmbedGroups:
    """One worker's grouping of embedding jobs (see the module's docstring)."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        keys: Keys,
        worker_id: str,
        *,
        base_slots: Callable[[], int] | None = None,
    ) -> None:
        self.size = settings.embed_batch
        self._settings = settings
        # The worker's slots now (its window share); by default its fixed requests in flight.
        self._base_slots = base_slots or (lambda: settings.max_in_flight)
        self._redis = redis
        self._keys = keys
        self._worker_id = worker_id
        # When the worker's latest item began, if it was an embedding (clock.monotonic()).
        self._embedding_since: float | None = None
        self._registered = False  # what the worker's entry in the window says
        self._in_flight = 0  # embedding items in a request now (leaders and riders)
        # Jobs waiting for a slot that a leader may take, in the order they began waiting.
        self._offers: dict[str, asyncio.Future[Group]] = {}
        # What a waiting job's item is, once read: (group key, inputs), or None (not groupable).
        self._peeked: dict[str, tuple[str, int] | None] = {}

    @property
    def active(self) -> bool:
        """The worker runs embeddings: its latest item was one, and some are in a request now
        or one began a moment ago (once they stop coming, it claims as usual again, whatever
        comes next)."""
        since = self._embedding_since
        if since is None:
            return False
        return self._in_flight > 0 or clock.monotonic() - since < _ACTIVE_S

    @property
    def job_limit(self) -> int:
        """The most jobs the worker should hold now (its claims stop there): a full group's
        worth for each slot it has now (under auto concurrency its share of the limit, not the
        ceiling ``max_jobs`` allows for)."""
        usual = self._settings.jobs_per_worker
        if not self.active:
            return usual
        return min(max_jobs(self._settings), usual + self._base_slots() * (self.size - 1))

    @property
    def registered_slots(self) -> int:
        """The slots the worker counts for in the dispatch window (its heartbeat writes them)."""
        self._registered = self.active
        return self._base_slots() * (self.size if self._registered else 1)

    def groups(self, item: Item) -> bool:
        """Whether ``item`` goes through a group (of one, when no other job fits)."""
        return self.size > 1 and item.endpoint is Endpoint.EMBED

    async def observe(self, item: Item) -> None:
        """Each item a worker begins says whether it is running embeddings; a change is
        registered at once, not at the next heartbeat, so the window follows."""
        self._embedding_since = clock.monotonic() if self.groups(item) else None
        if self.active == self._registered:
            return
        self._registered = self.active
        with contextlib.suppress(RedisError):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(self._keys.worker_slots, self._worker_id, str(self.registered_slots))
                await pipe.execute()

    async def wait_turn(self, slots: asyncio.Semaphore, jid: str) -> Group | None:
        """Wait for one of the worker's Ollama ``slots`` (None: the job holds it now) or to be
        taken into a leader's group (the group: the job holds no slot and must join or leave
        it). Only while the worker runs embeddings: the race costs a task per job."""
        if not self.active or not slots.locked():
            await slots.acquire()
            return None
        offer: asyncio.Future[Group] = asyncio.get_running_loop().create_future()
        self._offers[jid] = offer
        acquire = asyncio.ensure_future(slots.acquire())
        try:
            await asyncio.wait((acquire, offer), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            acquire.cancel()
            if acquire.done() and not acquire.cancelled():
                slots.release()
            if offer.done():
                offer.result().leave(jid)
            raise
        finally:
            # From here on no leader can take it.
            self._offers.pop(jid, None)
            self._peeked.pop(jid, None)
        if not offer.done():
            return None
        if acquire.done() and not acquire.cancelled():
            slots.release()
        else:
            acquire.cancel()
        return offer.result()

    async def lead(self, jid: str, item: Item, send: Send, free_slot: Callable[[], None]) -> Sent:
        """Send ``item`` with whatever waiting jobs can share its request; ``send`` is one
        request, ``free_slot`` gives up the leader's slot once the group's requests are done."""
        key = group_key(item)
        if key is None:
            raise ValueError("only an embedding leads a group")
        group = Group(key)
        own = group.add(jid, item)
        self._in_flight += 1
        try:
            room = self.size - len(group.members[0].inputs)
            if room > 0 and self._offers:
                await self._recruit(group, room)
                await group.ready()
            group.closed = True
            await _send_all(list(group.members), send)
        finally:
            self._in_flight -= 1
            free_slot()
            group.closed = True
            for m in group.members:
                if not m.outcome.done():
                    m.outcome.cancel()  # the leader was cancelled: so are its riders
        return own.result()

    async def ride(self, group: Group, jid: str, item: Item, send: Send) -> Sent:
        """A rider's request: its share of its leader's group. An item that cannot share it
        (never expected: items do not change) is sent alone."""
        if group_key(item) != group.key:
            group.leave(jid)
            return await send(item)
        self._in_flight += 1
        try:
            return await group.add(jid, item)
        finally:
            self._in_flight -= 1

    async def _recruit(self, group: Group, room: int) -> None:
        await self._peek(_PEEK_FACTOR * self.size)
        for jid, offer in list(self._offers.items()):
            kind = self._peeked.get(jid)
            if kind is None or kind[0] != group.key or kind[1] > room or offer.done():
                continue
            room -= kind[1]
            group.expect(jid)
            del self._offers[jid]
            offer.set_result(group)
            if room == 0:
                return

    async def _peek(self, most: int) -> None:
        """Read the items of waiting jobs not read yet, at most ``most`` of them."""
        todo = [jid for jid in self._offers if jid not in self._peeked][:most]
        if not todo:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for jid in todo:
                    batch_id, index = parse_job_id(jid)
                    pipe.hget(self._keys.batch(batch_id).items, str(index))
                raws = await pipe.execute()
        except (RedisError, ValueError):
            return  # the leader goes with the members it has
        for jid, raw in zip(todo, raws, strict=True):
            if jid in self._offers:  # it may have got a slot meanwhile
                self._peeked[jid] = _kind(raw)


def _kind(raw: bytes | None) -> tuple[str, int] | None:
    if raw is None:
        return None
    try:
        item = Item.loads(raw, checked=True)
    except (ValueError, KeyError, TypeError):
        return None
    key = group_key(item)
    return None if key is None else (key, len(_inputs(item)))


async def _send_all(members: list[_Member], send: Send) -> None:
    """Send the members as one request, splitting a group refused for its content in halves
    until each refusal is one member's own."""
    parts = [members]
    while parts:
        part = parts.pop()
        body = dict(part[0].item.body)
        body["input"] = [t for m in part for t in m.inputs]
        got = await send(Item(part[0].item.custom_id, Endpoint.EMBED, body))
        if isinstance(got, BackendError):
            if len(part) > 1 and got.kind in SPLIT_KINDS:
                half = len(part) // 2
                parts += [part[half:], part[:half]]  # the first half next
                continue
            for m in part:
                _settle(m, got)
            continue
        reply, host = got
        for m, own in zip(part, split_reply(reply, [m.inputs for m in part]), strict=True):
            _settle(m, (own, host))


def _settle(m: _Member, sent: Sent) -> None:
    if not m.outcome.done():  # a rider cancelled meanwhile (shutdown) takes nothing
        m.outcome.set_result(sent)


def split_reply(reply: Reply, inputs: list[list[str]]) -> list[Reply]:
    """Each member's reply: its own vectors (in its inputs' order), the request's durations,
    and a share of the prompt tokens by the characters of its inputs; one member's is the
    reply itself."""
    if len(inputs) == 1:
        return [reply]
    vectors = reply.embeddings or []
    weights = [sum(map(len, texts)) or 1 for texts in inputs]
    tokens = _shares(int(reply.metrics.get("prompt_eval_count") or 0), weights)
    out, at = [], 0
    for texts, n_tokens in zip(inputs, tokens, strict=True):
        metrics = dict(reply.metrics)
        if "prompt_eval_count" in metrics:
            metrics["prompt_eval_count"] = n_tokens
        out.append(Reply(text="", metrics=metrics, embeddings=vectors[at : at + len(texts)]))
        at += len(texts)
    return out


def _shares(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights``, the largest remainders rounded up: the
    shares add up to ``total`` exactly."""
    whole = sum(weights)
    raw = [total * w for w in weights]
    shares = [r // whole for r in raw]
    by_remainder = sorted(range(len(weights)), key=lambda i: raw[i] % whole, reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares
