from __future__ import annotations

import importlib
import inspect
import pkgutil

import batchq
from batchq import BatchClient, SyncBatchClient, errors


def test_all_is_sorted_and_importable() -> None:
    assert batchq.__all__ == sorted(batchq.__all__)
    for name in batchq.__all__:
        assert hasattr(batchq, name), name


def test_every_module_declares_all() -> None:
    for mod in pkgutil.iter_modules(batchq.__path__):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"batchq.{mod.name}")
        assert isinstance(getattr(module, "__all__", None), list), mod.name


def test_every_error_is_a_batchq_error() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.BatchqError)


def test_the_sync_client_mirrors_the_async_one() -> None:
    def public(cls: type) -> set[str]:
        return {n for n in vars(cls) if not n.startswith("_")}

    # Everything but the async client's store (which lives on its loop) has a blocking twin
    # with the same parameters.
    assert {"BatchClient", "SyncBatchClient"} <= set(batchq.__all__)
    assert public(SyncBatchClient) == public(BatchClient) - {"store"}
    for name in public(SyncBatchClient) - {"settings", "redis_url"}:
        sync, async_ = getattr(SyncBatchClient, name), getattr(BatchClient, name)
        assert not inspect.iscoroutinefunction(sync) and not inspect.isasyncgenfunction(sync)
        assert inspect.iscoroutinefunction(async_) or inspect.isasyncgenfunction(async_), name
        assert list(inspect.signature(sync).parameters.values()) == list(
            inspect.signature(async_).parameters.values()
        ), name
