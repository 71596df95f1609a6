"""A simulated Ollama over a real socket, for trying batchq and for its tests and
benchmarks: its settings (``config``), what it answers (``replies``), Ollama's wire format
(``wire``), its model slots (``slots``), the aiohttp server (``server``) and running it in a
thread or a process (``process``). Its answers are simulated, never a model's.

May import: the core only (errors). Nothing else of batchq: it stands in for Ollama, which
knows nothing of batchq.
"""

from __future__ import annotations

__all__: list[str] = []
