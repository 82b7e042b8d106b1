"""Giving back hash tables a storm left nearly empty, trio's task sets among them.

Why (issue 18, goal 2): a Python dict or set never shrinks its table as
entries go. After a million pending payments are cancelled and swept, the
simulator's own tables and three sets of trio's that held the million timer
tasks (the run's set of every task, the simulator nursery's children, and its
cancel status's tasks) keep tables sized for a million entries: 32 MiB each
for trio's sets, for as long as the process lives. ``is_sparse`` says when a
table is worth rebuilding (at least ``SPARSE_FROM_BYTES`` and under an eighth
in use); ``shrink_set`` rebuilds a set in place (``clear`` frees its table,
``update`` from a copy makes one sized for what is left), so whoever refers to
it keeps the same object; ``shrink_dict`` does the same for a dict. In place
also for the allocator's sake: a new container made after the storm would be
born among the storm's last objects and keep one of its memory arenas.

trio's sets are private to trio. ``shrink_trio_task_sets`` looks them up
defensively, touches them only on a trio release that was checked
(``paysim.parking.TESTED_TRIO``) and where each is a plain ``set``, and does
nothing otherwise. It is synchronous, so no iteration of trio's is in progress
while it runs: trio walks these sets only inside its own calls, never across a
checkpoint. ``tests/unit/service/test_sparse_tables.py`` shows it on the
installed trio, so a trio that renames them fails there.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from typing import TypeVar

import trio

from paysim import parking

SPARSE_FROM_BYTES = 1 << 20  # smaller tables are not worth a rebuild
_SLOT_BYTES = 16  # a set's slot (hash, key); a dict's entry is larger, so this errs low
T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


def is_sparse(table: Collection[object]) -> bool:
    """A dict or set whose table takes at least SPARSE_FROM_BYTES with under 1/8 of it used.

    A table grows when it is about 60 % full, so right after growing it is
    at least a quarter full: under an eighth means that entries went.
    """
    size = sys.getsizeof(table)
    return size >= SPARSE_FROM_BYTES and len(table) * _SLOT_BYTES * 8 < size


def shrink_set(table: set[T]) -> None:
    """Rebuild ``table`` in place with a table sized for its members."""
    members = set(table)
    table.clear()
    table.update(members)


def shrink_dict(table: dict[K, V]) -> None:
    """Rebuild ``table`` in place with a table sized for its entries.

    In place rather than ``table = dict(table)``: a long-lived container made
    anew after a storm is born among the storm's leftovers, wherever the
    allocator has room then, and keeps that memory arena from going back.
    """
    entries = dict(table)
    table.clear()
    table.update(entries)


def _trio_task_sets(nursery: trio.Nursery) -> list[set[object]]:
    """trio's sets that hold ``nursery``'s child tasks, or [] if trio is not as checked."""
    if not parking.trio_checked():
        return []
    runner = getattr(trio.lowlevel.current_task(), "_runner", None)
    found = [
        getattr(runner, "tasks", None),
        getattr(nursery, "_children", None),
        getattr(getattr(nursery, "_cancel_status", None), "_tasks", None),
    ]
    sets = [table for table in found if type(table) is set]
    return sets if len(sets) == len(found) else []


def shrink_trio_task_sets(nursery: trio.Nursery) -> int:
    """Rebuild those of trio's task sets of ``nursery`` that are sparse; how many were.

    Call it from a task of the same ``trio.run`` (never from a thread).
    """
    shrunk = 0
    for table in _trio_task_sets(nursery):
        if is_sparse(table):
            shrink_set(table)
            shrunk += 1
    return shrunk
