"""Liveness and readiness, shared by the HTTP probes and the gRPC health service.

``app.run`` owns one ``Readiness`` and flips it: ready once every listener is
up, not ready from the moment shutdown begins (and never ready again). Readers
(``/readyz``, ``grpc.health.v1.Health/Check`` and ``Watch``) only look.
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
        self._changed = trio.Event()

    @property
    def state(self) -> ServingState:
        return self._state

    @property
    def is_ready(self) -> bool:
        return self._state is ServingState.SERVING

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

    def _set(self, state: ServingState) -> None:
        self._state = state
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> ServingState:
        """Block until the state changes, then return the new state."""
        await self._changed.wait()
        return self._state
