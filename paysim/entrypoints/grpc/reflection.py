"""gRPC server reflection, both ``grpc.reflection.v1`` and ``v1alpha``.

grpcurl, grpcui and Postman ask these to list services and fetch descriptors.
The message classes come from grpcio-reflection (v1alpha); v1 has the very same
messages under another package, so the same classes serve it on the wire, and
its file descriptor is derived from v1alpha's at start-up (renamed, nothing
copied by hand). Files are answered with their transitive dependencies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import purerpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2 as pb
from purerpc.rpc import Cardinality, RPCSignature

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
# Tool chatter (grpcurl, grpcui ask before every call): their "rpc" lines are at
# debug, not info, when they succeed.
QUIET_SERVICES = frozenset({V1, V1ALPHA})
_NOT_FOUND = 5
_INVALID_ARGUMENT = 3


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """v1alpha's file descriptor, renamed to ``grpc.reflection.v1``."""
    fd = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(fd)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    fd.name = "grpc/reflection/v1/reflection.proto"
    fd.package = "grpc.reflection.v1"
    fd.options.java_package = "io.grpc.reflection.v1"
    fd.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    for message in fd.message_type:
        for f in message.field:
            f.type_name = f.type_name.replace(old, new)
    for service in fd.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    return fd


class _Index:
    """Serialized files by name, and the file defining each symbol."""

    def __init__(self, roots: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self.files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        self.symbols: dict[str, str] = {}
        pool = descriptor_pool.Default()
        todo = list(roots)
        while todo:
            fd = todo.pop()
            if fd.name in self.files:
                continue
            self.files[fd.name] = fd
            self._index(fd)
            for dep in fd.dependency:
                if dep not in self.files:
                    dep_fd = descriptor_pb2.FileDescriptorProto()
                    pool.FindFileByName(dep).CopyToProto(dep_fd)
                    todo.append(dep_fd)

    def _index(self, fd: descriptor_pb2.FileDescriptorProto) -> None:
        prefix = f"{fd.package}." if fd.package else ""

        def messages(items: Iterable[descriptor_pb2.DescriptorProto], scope: str) -> None:
            for m in items:
                name = scope + m.name
                self.symbols[name] = fd.name
                for f in m.field:
                    self.symbols[f"{name}.{f.name}"] = fd.name
                for e in m.enum_type:
                    self.symbols[f"{name}.{e.name}"] = fd.name
                messages(m.nested_type, name + ".")

        messages(fd.message_type, prefix)
        for e in fd.enum_type:
            self.symbols[prefix + e.name] = fd.name
            for v in e.value:
                self.symbols[prefix + v.name] = fd.name
        for s in fd.service:
            self.symbols[prefix + s.name] = fd.name
            for m in s.method:
                self.symbols[f"{prefix}{s.name}.{m.name}"] = fd.name

    def closure(self, name: str) -> list[bytes]:
        """The file and everything it imports, the file itself first."""
        out: list[bytes] = []
        seen: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop(0)
            if current in seen:
                continue
            seen.add(current)
            fd = self.files[current]
            out.append(fd.SerializeToString())
            todo.extend(fd.dependency)
        return out


class ReflectionServicer(purerpc.Servicer):  # type: ignore[misc]
    def __init__(self, name: str, services: Iterable[str], index: _Index) -> None:
        self._name = name
        self._services = sorted(services)
        self._index = index

    @classmethod
    def both(cls, services: Iterable[str], files: Iterable[Any]) -> list[ReflectionServicer]:
        """v1 and v1alpha servicers listing ``services`` (plus themselves)."""
        roots = []
        for f in [*files, pb.DESCRIPTOR]:
            fd = descriptor_pb2.FileDescriptorProto()
            f.CopyToProto(fd)
            roots.append(fd)
        roots.append(_v1_file())
        index = _Index(roots)
        names = [*services, V1, V1ALPHA]
        return [cls(V1, names, index), cls(V1ALPHA, names, index)]

    def _answer(self, req: Any) -> Any:
        resp = pb.ServerReflectionResponse(valid_host=req.host, original_request=req)
        kind = req.WhichOneof("message_request")
        index = self._index
        if kind == "list_services":
            resp.list_services_response.service.extend(
                pb.ServiceResponse(name=n) for n in self._services
            )
        elif kind == "file_by_filename":
            if req.file_by_filename in index.files:
                files = index.closure(req.file_by_filename)
                resp.file_descriptor_response.file_descriptor_proto.extend(files)
            else:
                _error(resp, _NOT_FOUND, f"file not found: {req.file_by_filename}")
        elif kind == "file_containing_symbol":
            symbol = req.file_containing_symbol.lstrip(".")
            file_name = index.symbols.get(symbol)
            if file_name is None:
                _error(resp, _NOT_FOUND, f"symbol not found: {symbol}")
            else:
                resp.file_descriptor_response.file_descriptor_proto.extend(index.closure(file_name))
        elif kind == "file_containing_extension":
            _error(resp, _NOT_FOUND, "extension not found")
        elif kind == "all_extension_numbers_of_type":
            type_name = req.all_extension_numbers_of_type
            if type_name in index.symbols:
                resp.all_extension_numbers_response.base_type_name = type_name
            else:
                _error(resp, _NOT_FOUND, f"type not found: {type_name}")
        else:
            _error(resp, _INVALID_ARGUMENT, "empty reflection request")
        return resp

    async def ServerReflectionInfo(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for req in requests:
            yield self._answer(req)

    @property
    def service(self) -> purerpc.Service:
        svc = purerpc.Service(self._name)
        sig = RPCSignature(
            Cardinality.STREAM_STREAM, pb.ServerReflectionRequest, pb.ServerReflectionResponse
        )
        svc.add_method("ServerReflectionInfo", self.ServerReflectionInfo, sig)
        return svc


def _error(resp: Any, code: int, message: str) -> None:
    resp.error_response.error_code = code
    resp.error_response.error_message = message
