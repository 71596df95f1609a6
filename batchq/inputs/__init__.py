"""What a batch is made of: input lines checked and turned into items.

``native`` reads a JSONL or text file line by line (batchq's own lines, and every other kind it
recognises), ``openai`` OpenAI Batch API request lines, ``embeddings`` embedding lines,
``fields`` the checks of single values shared by all of them, ``sources`` the places a batch
comes from (a path, a stream, Python values) and their submission.

May import: the core (errors, settings, clock, records, options) and ``store``. Never the
CLI, the workers, the monitor, the clients.
"""

from __future__ import annotations

__all__: list[str] = []
