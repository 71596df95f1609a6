"""batchq: a persistent batch-inference queue for local LLMs (Ollama), on arq and Redis."""

from __future__ import annotations

from .batches import BatchStore
from .client import BatchClient
from .collect import iter_results, wait_finished, write_results
from .connection import connect, resolve_redis_url
from .errors import (
    BatchNotFound,
    BatchqError,
    BatchStateError,
    ConfigError,
    EmbeddedServerError,
    InputError,
    ItemNotFound,
    OllamaError,
    PermanentOllamaError,
    RedisUnavailable,
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
from .ollama import OllamaClient
from .settings import Settings
from .sync_client import SyncBatchClient

__version__ = "0.1.0"

__all__ = [
    "AttemptError",
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
    "PermanentOllamaError",
    "RedisUnavailable",
    "Settings",
    "SyncBatchClient",
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
