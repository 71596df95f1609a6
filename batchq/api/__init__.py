"""OpenAI's Files and Batches API and Anthropic's Message Batches, served by ``batchq serve``
next to its status page, so code written for either runs against batchq unchanged but for
``base_url`` and the key.

``app`` mounts them under ``/v1``; ``auth`` checks API keys; ``files`` and ``filestore`` are the
Files API and its storage (Redis and disk); ``batches`` and ``batch_store`` the Batches API over
ordinary batchq batches; ``outputs`` writes a finished batch's output and error files;
``openai_objects`` the shapes OpenAI's client reads. ``messages`` and ``message_batches`` are
Anthropic's Message Batches, ``message_body`` reads their create's body as it arrives, and
``anthropic_objects`` the shapes Anthropic's client reads.

May import: the core, ``store``, ``inputs``, ``results``. Never the CLI, the workers, the
monitor, the clients.
"""

from __future__ import annotations

__all__: list[str] = []
