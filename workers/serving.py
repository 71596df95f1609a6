"""The models this worker's Ollama hosts serve (:mod:`batchq.store.models` has the rule, which
one script applies for all workers of a host at once), and so the models whose jobs this worker
dispatches and claims.

A worker asks about each host every :data:`~batchq.store.models.PICK_INTERVAL_S`, and sooner
(at most every :data:`_FORCED_S`) when a claim finds nothing for it: its model may have run
dry. Each host's ``/api/ps`` is read every :data:`PS_EVERY_S` by a loop of its own
(:meth:`HostModels.watch_loaded`), never on the way to a claim, which a slow Ollama would hold
up: a host holding several models at once (enough VRAM, ``OLLAMA_MAX_LOADED_MODELS`` > 1) also
gets work for the others it holds, which costs it no load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from batchq import clock
from batchq.backends.pool import HostPool
from batchq.errors import BackendError
from batchq.settings import Settings
from batchq.store.models import PICK_INTERVAL_S, Serving

__all__ = ["PS_EVERY_S", "HostModels"]

log = logging.getLogger("batchq.worker")

PS_EVERY_S = 5.0
_FORCED_S = 0.25


class HostModels:
    def __init__(self, settings: Settings, hosts: HostPool, serving: Serving) -> None:
        self.settings = settings
        self.hosts = hosts
        self.serving = serving
        self._next = 0.0  # clock.monotonic() of the next regular ask
        self._last = float("-inf")

    def models(self) -> list[str]:
        """The models whose jobs this worker takes; ``''`` (no model: only the wildcards, the
        batches of several models) while no host has one."""
        out = {m for h in self.hosts.hosts for m in h.models}
        return sorted(out) or [""]

    def takes(self, model: str) -> bool:
        """Whether a job of ``model`` may go to Ollama now: claimed for a model its host no
        longer serves, it would make the host load that model back (see
        :func:`workers.inference.run_item`)."""
        return not model or any(model in h.models for h in self.hosts.hosts)

    async def refresh(self, *, force: bool = False) -> None:
        """Ask which model each host serves, if it is time (``force``: the worker found
        nothing to claim)."""
        now = clock.monotonic()
        if now < self._next and not (force and now >= self._last + _FORCED_S):
            return
        self._last = now
        self._next = now + PICK_INTERVAL_S
        s = self.settings
        for host in self.hosts.hosts:
            pick = await self.serving.pick(
                host.eid,
                now_ms=clock.now_ms(),
                switch_after_ms=int(s.model_switch_after * 1000),
                hold_ms=int(s.heartbeat * 3 * 1000),
                loaded=_names(host.loaded),
                several=len(host.loaded) > 1,
            )
            if pick.changed and pick.model:
                log.info("Ollama at %s: now serving %s", host.url, pick.model)
            models = [pick.model, *pick.others] if pick.model else []
            host.models = tuple(models)

    async def read_loaded(self) -> None:
        """Each host's ``/api/ps``, once."""
        for host in self.hosts.hosts:
            try:
                host.loaded = tuple(m.name for m in await host.backend.loaded_models())
            except BackendError:
                host.loaded = ()  # unknown while it does not answer

    async def watch_loaded(self) -> None:
        """:meth:`read_loaded` every :data:`PS_EVERY_S`, until cancelled."""
        while True:
            await self.read_loaded()
            await asyncio.sleep(PS_EVERY_S)


def _names(names: Iterable[str]) -> tuple[str, ...]:
    """The names a batch may give each model: Ollama's ``/api/ps`` says ``llama3.2:latest``
    where a batch says ``llama3.2``, the same model."""
    out: list[str] = []
    for name in names:
        out.append(name)
        base, _, tag = name.rpartition(":")
        if tag == "latest" and base:
            out.append(base)
    return tuple(out)
