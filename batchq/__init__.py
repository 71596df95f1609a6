"""batchq: a persistent batch-inference queue for local LLMs (Ollama), on arq and Redis.

The names below are imported on first use (PEP 562), so that ``batchq status`` and the other
commands start without loading what they do not need (aiohttp, the clients, pydantic models).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends.ollama import OllamaClient
    from .batches import BatchStore
    from .client import BatchClient
    from .collect import iter_results, wait_finished, write_results
    from .connection import connect, resolve_redis_url
    from .errors import (
        BackendError,
        BatchNotFound,
        BatchqError,
        BatchStateError,
        ConfigError,
        EmbeddedServerError,
        InputError,
        ItemNotFound,
        OllamaError,
        PermanentBackendError,
        PermanentOllamaError,
        RedisUnavailable,
        TransientBackendError,
        TransientOllamaError,
    )
    from .inputs import iter_items
    from .items import find_indices, item_info
    from .keys import Keys
    from .models import (
        AttemptError,
        BatchState,
        BatchStatus,
        Endpoint,
        Item,
        ItemError,
        ItemInfo,
        ItemResult,
        ItemState,
        ItemStatus,
    )
    from .settings import Settings
    from .sync_client import SyncBatchClient

__version__ = "0.1.0"

# Public name -> the module that defines it.
_WHERE = {
    "AttemptError": "models",
    "BackendError": "errors",
    "BatchClient": "client",
    "BatchNotFound": "errors",
    "BatchState": "models",
    "BatchStateError": "errors",
    "BatchStatus": "models",
    "BatchStore": "batches",
    "BatchqError": "errors",
    "ConfigError": "errors",
    "EmbeddedServerError": "errors",
    "Endpoint": "models",
    "InputError": "errors",
    "Item": "models",
    "ItemError": "models",
    "ItemInfo": "models",
    "ItemNotFound": "errors",
    "ItemResult": "models",
    "ItemState": "models",
    "ItemStatus": "models",
    "Keys": "keys",
    "OllamaClient": "backends.ollama",
    "OllamaError": "errors",
    "PermanentBackendError": "errors",
    "PermanentOllamaError": "errors",
    "RedisUnavailable": "errors",
    "Settings": "settings",
    "SyncBatchClient": "sync_client",
    "TransientBackendError": "errors",
    "TransientOllamaError": "errors",
    "connect": "connection",
    "find_indices": "items",
    "item_info": "items",
    "iter_items": "inputs",
    "iter_results": "collect",
    "resolve_redis_url": "connection",
    "wait_finished": "collect",
    "write_results": "collect",
}

__all__ = [
    "AttemptError",
    "BackendError",
    "BatchClient",
    "BatchNotFound",
    "BatchState",
    "BatchStateError",
    "BatchStatus",
    "BatchStore",
    "BatchqError",
    "ConfigError",
    "EmbeddedServerError",
    "Endpoint",
    "InputError",
    "Item",
    "ItemError",
    "ItemInfo",
    "ItemNotFound",
    "ItemResult",
    "ItemState",
    "ItemStatus",
    "Keys",
    "OllamaClient",
    "OllamaError",
    "PermanentBackendError",
    "PermanentOllamaError",
    "RedisUnavailable",
    "Settings",
    "SyncBatchClient",
    "TransientBackendError",
    "TransientOllamaError",
    "__version__",
    "connect",
    "find_indices",
    "item_info",
    "iter_items",
    "iter_results",
    "resolve_redis_url",
    "wait_finished",
    "write_results",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'batchq' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"batchq.{module}"), name)
    globals()[name] = value  # once imported, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
