"""The dispatch order: strict priorities, stride scheduling among the batches of a priority.

Every batch with items to dispatch is *ready*. Ready batches sit in one sorted set per priority
level, scored by their *pass*; a sorted set of the levels themselves finds the highest one. The
dispatcher gives the next item to the batch with the smallest pass in the highest level, and
advances that batch's pass by its stride, ``1 / weight``: over any stretch of time each batch of
a level gets items in proportion to its weight, and a lower level gets items only while no
higher one has any to dispatch. Each item costs a few O(log n) sorted-set operations whatever
the number of ready batches, and a batch leaves its level in O(log n) when it runs dry, is
paused, cancelled or finishes.

A batch that joins a level (submitted, resumed, retried, or given back items by the reaper or
the repairer) starts at the level's current smallest pass: the time it spent away earns it no
credit to spend in a burst at the others' expense. One sorted set per level rather than one set
with a composite score keeps every pass an exact small float, however far a level's passes
have advanced, and the levels set stays as small as the number of priorities in use.

The meaning of the ``active`` flag in a batch's hash is unchanged: 1 while it is ready.

The ready sets change in Lua: ``batchq/store/lua/lib/stride.lua`` (join, leave), used by
``dispatch.lua``, ``join.lua`` and the scripts that ready a batch or take it out.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["jain_index"]


def jain_index(shares: Sequence[float]) -> float:
    """Jain's fairness index of ``shares``: 1 when all are equal, 1/n when one has it all.
    Divide each share by its batch's weight first to judge weighted fairness."""
    if not shares or not any(shares):
        raise ValueError("no shares to judge")
    return sum(shares) ** 2 / (len(shares) * sum(x * x for x in shares))
