"""batchq: a persistent batch-inference queue for local LLMs (Ollama), on arq and Redis.

The names below are imported on first use (PEP 562), so that ``batchq status`` and the other
commands start without loading what they do not need (aiohttp, the clients, pydantic models).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchq.backends.ollama import OllamaClient
    from batchq.client import BatchClient
    from batchq.errors import (
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
        SubmissionIncomplete,
        TransientBackendError,
        TransientOllamaError,
    )
    from batchq.inputs.native import iter_items
    from batchq.records import (
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
    from batchq.results.export import iter_results, wait_finished, write_results
    from batchq.settings import Settings
    from batchq.store.batches import BatchStore
    from batchq.store.connection import connect, resolve_redis_url
    from batchq.store.items import find_indices, item_info
    from batchq.store.keys import Keys
    from batchq.sync_client import SyncBatchClient

__version__ = "0.1.0"

# Public name -> the module that defines it.
_WHERE = {
    "AttemptError": "records",
    "BackendError": "errors",
    "BatchClient": "client",
    "BatchNotFound": "errors",
    "BatchState": "records",
    "BatchStateError": "errors",
    "BatchStatus": "records",
    "BatchStore": "store.batches",
    "BatchqError": "errors",
    "ConfigError": "errors",
    "EmbeddedServerError": "errors",
    "Endpoint": "records",
    "InputError": "errors",
    "Item": "records",
    "ItemError": "records",
    "ItemInfo": "records",
    "ItemNotFound": "errors",
    "ItemResult": "records",
    "ItemState": "records",
    "ItemStatus": "records",
    "Keys": "store.keys",
    "OllamaClient": "backends.ollama",
    "OllamaError": "errors",
    "PermanentBackendError": "errors",
    "PermanentOllamaError": "errors",
    "RedisUnavailable": "errors",
    "Settings": "settings",
    "SubmissionIncomplete": "errors",
    "SyncBatchClient": "sync_client",
    "TransientBackendError": "errors",
    "TransientOllamaError": "errors",
    "connect": "store.connection",
    "find_indices": "store.items",
    "item_info": "store.items",
    "iter_items": "inputs.native",
    "iter_results": "results.export",
    "resolve_redis_url": "store.connection",
    "wait_finished": "results.export",
    "write_results": "results.export",
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
    "SubmissionIncomplete",
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
