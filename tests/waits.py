"""Waiting for something to happen, the one way the suite does it: poll a condition until it
holds, with a bound generous enough for a loaded 2-core machine, never a fixed sleep.

A bound only costs time when the condition never comes, so process-level events (a server
starting, a worker finishing its requests, a failover) get a minute or more: on the machine
CI shares with other sessions they can take ten times as long as on a quiet one.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["async_wait_until", "wait_for_value", "wait_until"]

T = TypeVar("T")


def _message(what: str, timeout: float, last: object, explain: Callable[[], str] | None) -> str:
    extra = explain() if explain is not None else f"; last seen: {last!r}"
    return f"{what}: not within {timeout:g} s{extra}"


def wait_until(
    cond: Callable[[], T | None],
    *,
    timeout: float = 60,
    interval: float = 0.05,
    what: str = "condition",
    explain: Callable[[], str] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``cond`` every ``interval`` s until it returns something true, and return that.

    Exceptions of the ``ignore`` types count as "not yet" (a server still starting refuses
    connections). Past ``timeout`` the test fails, saying ``what`` did not happen and either
    ``explain()`` or the last value seen.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = value = cond()
            if value:
                return value
        except ignore as e:
            last = e
        assert time.monotonic() < deadline, _message(what, timeout, last, explain)
        time.sleep(interval)


def wait_for_value(
    read: Callable[[], T],
    ok: Callable[[T], object],
    *,
    timeout: float = 60,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call ``read`` until ``ok`` holds for what it returns, and return that; on failure the
    message shows the last value read."""
    seen: list[T] = []

    def holds() -> bool:
        seen[:] = [read()]
        return bool(ok(seen[0]))

    wait_until(
        holds, timeout=timeout, interval=interval, what=what, explain=lambda: f"; last: {seen}"
    )
    return seen[0]


async def async_wait_until(
    cond: Callable[[], Awaitable[T | None] | T | None],
    *,
    # Not asyncio.timeout around the call: the failure says what did not happen, and when.
    timeout: float = 60,  # noqa: ASYNC109
    interval: float = 0.05,
    what: str = "condition",
    explain: Callable[[], str] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """:func:`wait_until` from a coroutine: the loop runs between polls. ``cond`` may be a
    coroutine function or a plain one."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = cond()
            if inspect.isawaitable(value):
                value = await value
            last = value
            if value:
                return value
        except ignore as e:
            last = e
        assert time.monotonic() < deadline, _message(what, timeout, last, explain)
        await asyncio.sleep(interval)
