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
from collections.abc import AsyncGenerator
from typing import cast

from trio_util import AsyncValue


class ServingState(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"


class Readiness:
    """The process's serving state; readers wait for readiness changes (Watch streams).

    Both values are trio-util ``AsyncValue``s: a change wakes exactly the
    readers waiting for it, with no event to re-arm.
    """

    def __init__(self) -> None:
        # (state, the store answers), and whether that makes the process ready.
        self._serving = AsyncValue((ServingState.STARTING, True))
        self._ready = AsyncValue(False)

    @property
    def state(self) -> ServingState:
        return cast(ServingState, self._serving.value[0])

    @property
    def is_ready(self) -> bool:
        return cast(bool, self._ready.value)

    @property
    def store_available(self) -> bool:
        return cast(bool, self._serving.value[1])

    @property
    def is_live(self) -> bool:
        """The process is alive as long as it can answer; draining is still alive."""
        return True

    def mark_serving(self) -> None:
        if self.state is ServingState.STARTING:
            self._set(ServingState.SERVING, self.store_available)

    def mark_draining(self) -> None:
        self._set(ServingState.DRAINING, self.store_available)

    def mark_store(self, available: bool) -> None:
        """The shared store answers (True) or is unreachable (False)."""
        self._set(self.state, available)

    def _set(self, state: ServingState, store_available: bool) -> None:
        # An AsyncValue wakes its waiters only when the value really changes.
        self._serving.value = (state, store_available)
        self._ready.value = state is ServingState.SERVING and store_available

    async def wait_changed(self) -> ServingState:
        """Block until the state or the store's availability changes; the new state."""
        await self._serving.wait_transition()
        return self.state

    def ready_values(self) -> AsyncGenerator[bool, None]:
        """Whether the process is ready now, then again at each change.

        Eventually consistent (``AsyncValue.eventual_values``): the latest
        value is always reached, but a flip and back while the reader is busy
        may be skipped. The caller closes it (``contextlib.aclosing``).
        """
        return cast(AsyncGenerator[bool, None], self._ready.eventual_values())
