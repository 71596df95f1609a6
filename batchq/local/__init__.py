"""Everything on one machine: ``batchq run`` (``runner``: the embedded Redis, worker
processes, the progress bar, the results) and ``batchq bench`` (``bench``: the same prompts on
several models through the queue).

May import: the core, ``store``, ``inputs``, ``results``, ``backends`` and ``monitor``; it starts
workers as processes, never by importing ``workers``. Never the CLI.
"""

from __future__ import annotations

__all__: list[str] = []
