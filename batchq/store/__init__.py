"""batchq's storage in Redis: the keys it writes, the connection, and the Lua scripts that
change several keys at once (``store/lua``: one file per script, shared functions in
``store/lua/lib``, all loaded by the one registry in :mod:`batchq.store.lua`).

The modules that keep batches, items, dispatch, stride scheduling and admission in Redis belong
here too, and move in as the package grows.

May import: the core modules (errors, settings, clock, the records in models, keys), the
standard library and redis. Never the CLI, the workers, the monitor or the clients, which all
build on this package.
"""

from __future__ import annotations

__all__: list[str] = []
