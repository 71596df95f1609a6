"""batchq's arq workers: ``arq workers.WorkerSettings`` (configured from the environment), or
``batchq worker`` (configured from its flags).

What one worker process does: ``settings`` (arq's settings and the JSON codec), ``worker``
(the arq ``Worker`` subclass: claiming jobs in one script, refilling freed slots, bursts),
``state`` (what a worker holds while it runs), ``inference`` (the job: one item, one request
to Ollama, its outcome), ``autoconc`` (its gates in front of the shared self-tuned limits of
``--concurrency auto``), ``lifecycle`` (startup, shutdown, the heartbeat and dispatch loops),
``housekeeping`` (repair, expiry, the hook loop), ``notify`` (sending a completion hook and
recording what came of it), ``hook_http`` (its POST, bounded against hostile receivers) and
``stats`` (its counts and Prometheus metrics).

May import the core, ``batchq.store`` and ``batchq.backends``; never the clients,
``batchq.local`` or the CLI. Nothing in ``batchq`` imports it but ``batchq worker`` (in
``batchq.cli.run``), and that only when the command runs; ``batchq.local`` starts workers as
processes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["WorkerSettings"]


def __getattr__(name: str) -> Any:
    # Lazy: building the settings resolves Redis, which may start the embedded server.
    if name == "WorkerSettings":
        from workers.settings import settings_class

        return settings_class()
    raise AttributeError(name)
