"""Liveness and readiness, shared by the HTTP probes and the gRPC health service.

``app.run`` owns one ``Readiness`` and flips it: ready once every listener is
up, not ready from the moment shutdown begins (and never ready again). Between
the two, it is also not ready while the shared store is unreachable
(``mark_store``), and ready again once it answers: a replica that cannot reach
Redis should get no traffic, but it stays alive (``is_live``) and recovers by
itself. Readers (``/readyz``, ``grpc.health.v1.Health/Check`` and ``Watch``)
only look.
"""

from __future__ import annotations

import enum

import trio


class ServingState(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"


class Readiness:
    """The process's serving state, with change notification for Watch streams."""

    def __init__(self) -> None:
        self._state = ServingState.STARTING
        self._store_available = True
        self._changed = trio.Event()

    @property
    def state(self) -> ServingState:
        return self._state

    @property
    def is_ready(self) -> bool:
        return self._state is ServingState.SERVING and self._store_available

    @property
    def store_available(self) -> bool:
        return self._store_available

    @property
    def is_live(self) -> bool:
        """The process is alive as long as it can answer; draining is still alive."""
        return True

    def mark_serving(self) -> None:
        if self._state is ServingState.STARTING:
            self._set(ServingState.SERVING)

    def mark_draining(self) -> None:
        if self._state is not ServingState.DRAINING:
            self._set(ServingState.DRAINING)

    def mark_store(self, available: bool) -> None:
        """The shared store answers (True) or is unreachable (False)."""
        if available is not self._store_available:
            self._store_available = available
            self._notify()

    def _set(self, state: ServingState) -> None:
        self._state = state
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> ServingState:
        """Block until the state or the store's availability changes; the new state."""
        await self._changed.wait()
        return self._state
