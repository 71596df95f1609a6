"""Model-aware dispatch: which model each Ollama host serves, so that a GPU that holds one
model at a time is not made to swap models between requests.

Ollama's scheduler takes pending requests one at a time, and one that names a model not
loaded waits until the loaded model's requests are done, unloads it and loads its own
(seconds). Requests that alternate models therefore run at the pace of model loads: 240
items alternating three models took 772 s on the simulator where the same items grouped by
model took 22.8 s. So each host serves one model at a time, chosen for all the workers that
talk to it by one script (``pick.lua``), and the workers dispatch and claim only that model's
jobs (``dispatch.lua``, ``claim.lua``).

The rule, in order:

1. **Priority first.** A host serves a model that has ready work at the highest priority any
   model has. Within a model, batches are dispatched in stride order as before
   (:mod:`batchq.store.stride`), so priorities and weights mean what they meant.
2. **Stay while there is work.** A host keeps its model while that model has ready work (items
   to dispatch or jobs not yet taken): every switch costs a model load.
3. **Nothing starves.** It switches anyway when another model at that priority, served by no
   other host, has waited longer than ``model_switch_after`` (the setting, default 120 s)
   since a host last served it (or since its work appeared). Two batches of different models
   on one host thus take turns of that length, and the loads cost little next to them.
4. **Spread over hosts.** A host choosing a model prefers one that no other host serves, then
   one that it has loaded already (its ``/api/ps``), then the one that has waited longest.

A batch whose items name several models (or one stored before batches recorded their model)
is a wildcard: any host dispatches and takes its jobs, in input order, as before.

Each worker asks about each of its hosts at least every :data:`PICK_INTERVAL_S`, and at once
when it finds nothing to claim; a host whose workers stop asking (all gone) is forgotten after
``hold_ms``, and its model goes to the next host that asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from batchq.store.codec import text
from batchq.store.keys import Keys
from batchq.store.scripts import ScriptCaller

__all__ = ["PICK_INTERVAL_S", "ModelWork", "Pick", "Served", "Serving"]

# How often a worker asks which model its host serves, when nothing else makes it ask.
PICK_INTERVAL_S = 1.0

# How many batches of a level, and due jobs, one pick looks at.
_SCAN = 1000


@dataclass(frozen=True, slots=True)
class ModelWork:
    """A model with ready work: its highest priority, and how long it has waited (ms)."""

    model: str
    priority: int
    waited_ms: int


@dataclass(frozen=True, slots=True)
class Served:
    """What the workers of one host last said of it: the model it serves, when (ms), and how
    many times it was given a model it did not have loaded (each one a model load)."""

    model: str
    at_ms: int
    loads: int
    others: tuple[str, ...] = ()  # the models it holds at once with that one, served too


@dataclass(frozen=True, slots=True)
class Pick:
    """What :meth:`Serving.pick` decided for a host."""

    model: str  # '' while no model has had work for it
    changed: bool
    others: tuple[str, ...]  # the models it holds at once with that one, served too
    work: tuple[ModelWork, ...]


class Serving(ScriptCaller):
    """The models the Ollama hosts serve, as all workers agree on them through Redis."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        super().__init__(redis)
        self.keys = keys

    async def pick(
        self,
        endpoint: str,
        *,
        now_ms: int,
        switch_after_ms: int,
        hold_ms: int,
        loaded: Sequence[str] = (),
        several: bool = False,
    ) -> Pick:
        """The model the host ``endpoint`` (its endpoint id) serves from now on; ``loaded``:
        the models it has in memory, if known, under every name a batch may give them;
        ``several``: it holds more than one at once."""
        k = self.keys
        res = await self._run(
            "pick",
            [k.ready, k.queue, k.serving, k.models],
            [
                now_ms,
                k.batch_prefix(),
                endpoint,
                switch_after_ms,
                hold_ms,
                _SCAN,
                int(several),
                *loaded,
            ],
        )
        work = tuple(
            ModelWork(text(res[i]), int(res[i + 1]), int(res[i + 2])) for i in range(3, len(res), 3)
        )
        return Pick(
            text(res[0]),
            int(res[1]) == 1,
            tuple(text(res[2]).split()),
            tuple(sorted(work, key=lambda w: w.model)),
        )

    async def served(self) -> dict[str, Served]:
        """Every host a worker has picked a model for, by endpoint id."""
        out: dict[str, Served] = {}
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.keys.serving)  # type: ignore[misc]
        for eid, value in raw.items():
            model, at, loads, others = [*text(value).split("|", 3), "", "", ""][:4]
            if at.isdigit() and loads.isdigit():
                out[text(eid)] = Served(model, int(at), int(loads), tuple(others.split()))
        return out
