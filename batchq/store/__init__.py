"""batchq's storage in Redis: every key name (``keys``), the connection and the embedded
server (``connection``, ``embedded``), batches and their items (``batches``, ``items``, and
``staging`` for a submission's items before its commit), the dispatcher and its stride order
(``dispatch``, ``stride``), global limits (``admission``), the self-tuned concurrency limits
(``autolimit``), deadlines, worker heartbeats (``presence``), completion-hook claims
(``hooks``), the stored result format (``codec``), and the Lua scripts that change several
keys at once (``store/lua``: one file per script, shared functions in ``store/lua/lib``, all
loaded by the one registry in :mod:`batchq.store.lua`; the wrappers in ``scripts`` and
``control``).

May import: the core modules (errors, settings, clock, records, options, vectors), the
standard library and redis. Never inputs, results, backends, the monitor, the CLI, the workers
or the clients, which all build on this package.
"""

from __future__ import annotations

__all__: list[str] = []
