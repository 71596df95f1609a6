"""Watching the queue: terminal tables (``tables``), ``batchq top`` (``top``), ``status
--watch`` (``watch``), the web page of ``batchq serve`` (``web`` and ``web.html``) and the
Prometheus metrics of ``batchq metrics`` (``metrics``). Everything here reads; nothing changes a
batch.

May import: the core, ``store`` and ``results``. Never the CLI, the workers, the clients.
"""

from __future__ import annotations

__all__: list[str] = []
