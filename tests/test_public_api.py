from __future__ import annotations

import importlib
import pkgutil

import batchq
from batchq import errors


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
