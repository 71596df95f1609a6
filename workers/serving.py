"""The models this worker's Ollama hosts serve (:mod:`batchq.store.models` has the rule, which
one script applies for all workers of a host at once), and so the models whose jobs this worker
dispatches and claims.

A worker asks about each host every :data:`~batchq.store.models.PICK_INTERVAL_S`, and sooner
(at most every :data:`_FORCED_S`) when a claim finds nothing for it: its model may have run
dry. Each host's ``/api/ps`` is read at most every :data:`_PS_TTL_S`: a host holding several
models at once (enough VRAM, ``OLLAMA_MAX_LOADED_MODELS`` > 1) also gets work for the others
it holds, which costs it no load.
"""

from __future__ import annotations

import logging

from batchq import clock
from batchq.backends.pool import Host, HostPool
from batchq.errors import BackendError
from batchq.settings import Settings
from batchq.store.admission import endpoint_id
from batchq.store.models import PICK_INTERVAL_S, Serving

__all__ = ["HostModels"]

log = logging.getLogger("batchq.worker")

_PS_TTL_S = 5.0
_FORCED_S = 0.25


class HostModels:
    def __init__(self, settings: Settings, hosts: HostPool, serving: Serving) -> None:
        self.settings = settings
        self.hosts = hosts
        self.serving = serving
        self._next = 0.0  # clock.monotonic() of the next regular ask
        self._last = float("-inf")
        self._ps_at: dict[str, float] = {}

    def models(self) -> list[str]:
        """The models whose jobs this worker takes; ``''`` (no model: only the wildcards, the
        batches of several models) while no host has one."""
        out = {m for h in self.hosts.hosts for m in h.models}
        return sorted(out) or [""]

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
            loaded = await self._loaded(host, now)
            pick = await self.serving.pick(
                endpoint_id(host.url),
                now_ms=clock.now_ms(),
                switch_after_ms=int(s.model_switch_after * 1000),
                hold_ms=int(s.heartbeat * 3 * 1000),
                loaded=loaded,
            )
            if pick.changed and pick.model:
                log.info("Ollama at %s: now serving %s", host.url, pick.model)
            models = [pick.model] if pick.model else []
            if len(loaded) > 1:
                # It holds several at once: the others it holds cost it nothing to serve too.
                waiting = {w.model for w in pick.work}
                models += [m for m in loaded if m in waiting and m != pick.model]
            host.models = tuple(models)

    async def _loaded(self, host: Host, now: float) -> tuple[str, ...]:
        if now < self._ps_at.get(host.url, float("-inf")) + _PS_TTL_S:
            return host.loaded
        self._ps_at[host.url] = now
        try:
            host.loaded = tuple(m.name for m in await host.backend.loaded_models())
        except BackendError:
            host.loaded = ()  # unknown while it does not answer
        return host.loaded
