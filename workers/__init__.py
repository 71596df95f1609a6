"""batchq's arq workers: ``arq workers.WorkerSettings`` (configured from the environment), or
``batchq worker`` (configured from its flags)."""

from __future__ import annotations

from typing import Any

__all__ = ["WorkerSettings"]


def __getattr__(name: str) -> Any:
    # Lazy: building the settings resolves Redis, which may start the embedded server.
    if name == "WorkerSettings":
        from workers.settings import settings_class

        return settings_class()
    raise AttributeError(name)
