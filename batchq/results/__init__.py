"""What a batch gives back: results in input order (``export``: native or OpenAI lines,
streamed, never whole in memory), as they finish (``completed``), and OpenAI Batch API output
lines (``openai``).

May import: the core (errors, settings, clock, records, vectors) and ``store``. Never the CLI,
the workers, the monitor, the clients.
"""

from __future__ import annotations

__all__: list[str] = []
