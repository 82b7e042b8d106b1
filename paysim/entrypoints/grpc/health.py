"""``grpc.health.v1.Health``: Check and Watch, backed by the process's ``Readiness``.

The overall service ``""`` and every registered service report SERVING while
the process is ready, NOT_SERVING while it starts or drains (so Kubernetes'
native gRPC probes follow ``/readyz``). An unknown service is NOT_FOUND for
Check and SERVICE_UNKNOWN for Watch, as the protocol says. Watch follows
``Readiness.ready_values`` (a trio-util ``AsyncValue``), so it sends a status
only when readiness really changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import purerpc
import trio
from grpc_health.v1 import health_pb2
from purerpc.grpclib.status import StatusCode
from purerpc.rpc import Cardinality, RPCSignature

from paysim.entrypoints.grpc.errors import RpcError
from paysim.observability.health import Readiness

SERVICE_NAME = "grpc.health.v1.Health"
_Status = health_pb2.HealthCheckResponse


class HealthServicer(purerpc.Servicer):  # type: ignore[misc]
    def __init__(self, readiness: Readiness, services: Iterable[str]) -> None:
        self._readiness = readiness
        self._services = {"", *services, SERVICE_NAME}

    def _status(self, service: str) -> int:
        if service not in self._services:
            return int(_Status.SERVICE_UNKNOWN)
        return int(_Status.SERVING if self._readiness.is_ready else _Status.NOT_SERVING)

    async def Check(self, req: Any) -> Any:
        status = self._status(req.service)
        if status == _Status.SERVICE_UNKNOWN:
            raise RpcError(StatusCode.NOT_FOUND, f"service {req.service!r} not found")
        return _Status(status=status)

    async def Watch(self, req: Any) -> AsyncIterator[Any]:
        """The status now, then each change, until the client ends the call."""
        if req.service not in self._services:
            yield _Status(status=_Status.SERVICE_UNKNOWN)
            await trio.sleep_forever()  # it never changes; the protocol keeps the call open
        async with contextlib.aclosing(self._readiness.ready_values()) as values:
            async for ready in values:
                yield _Status(status=_Status.SERVING if ready else _Status.NOT_SERVING)

    @property
    def service(self) -> purerpc.Service:
        svc = purerpc.Service(SERVICE_NAME)
        req, resp = health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        svc.add_method("Check", self.Check, RPCSignature(Cardinality.UNARY_UNARY, req, resp))
        svc.add_method("Watch", self.Watch, RPCSignature(Cardinality.UNARY_STREAM, req, resp))
        return svc
