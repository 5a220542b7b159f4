"""gRPC bindings made from a service's protobuf descriptor, for the protos the project owns.

grpcio-tools would also generate a `_pb2_grpc` module: a servicer base class whose methods answer
UNIMPLEMENTED until overridden, a client class and a registration function. Made from the
descriptor instead, a server must implement every method of the service (a missing one fails at
start-up, not at the first call), and the client and the handler can never disagree with the
messages in `_pb2`.

Rules:
- Rule 1: only unary-unary and unary-stream methods (all that snapshots v1 has); a client-streaming
  method is refused when the binding is made.
- Rule 2: `rpc_errors` (unary methods) and `rpc_stream_errors` (server-streaming methods written as
  async generators) are the one place a servicer's error categories become status codes
  (lazyfly.rpc.status); anything else is logged and answered UNKNOWN.
"""

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass

from lazyfly.errors import LazyflyError, LocalProtocolError
from lazyfly.rpc.status import status_code

log = logging.getLogger(__name__)
R = TypeVar("R")
CallObserver = Callable[[Any, str, grpc.StatusCode], None]  # (servicer, method name, code)


def _kinds(method: MethodDescriptor) -> tuple[type, type]:
    if method.client_streaming:
        raise LocalProtocolError(f"{method.full_name}: client-streaming methods are not bound")
    return GetMessageClass(method.input_type), GetMessageClass(method.output_type)


def service_handler(service: ServiceDescriptor, implementation: object) -> grpc.GenericRpcHandler:
    """The handler that serves every method of `service` with the same-named method of `implementation`."""
    handlers = {}
    for method in service.methods:
        request, response = _kinds(method)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            getattr(implementation, method.name),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


class ServiceStub:
    """A client of `service` on `channel`: one callable attribute per method (sync or aio channel)."""

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel, service: ServiceDescriptor) -> None:
        for method in service.methods:
            request, response = _kinds(method)
            factory = channel.unary_stream if method.server_streaming else channel.unary_unary
            path = f"/{service.full_name}/{method.name}"
            setattr(
                self,
                method.name,
                factory(
                    path,
                    request_serializer=request.SerializeToString,
                    response_deserializer=response.FromString,
                ),
            )


def rpc_errors(
    observe: CallObserver | None = None,
) -> Callable[[Callable[..., Awaitable[R]]], Callable[..., Awaitable[R]]]:
    """Decorate an async unary servicer method `(self, request)`: errors become status codes (Rule 2);
    `observe(servicer, method name, code)` hears of every answer."""

    def decorate(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        name = method.__name__

        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
            try:
                answer = await method(self, request)
            except LazyflyError as exc:
                log.info("%s: %s: %s", name, type(exc).__name__, exc)
                _observe(observe, self, name, status_code(exc))
                await context.abort(status_code(exc), str(exc))
            except Exception as exc:
                log.exception("%s failed", name)
                _observe(observe, self, name, grpc.StatusCode.UNKNOWN)
                await context.abort(grpc.StatusCode.UNKNOWN, f"{name}: {type(exc).__name__}: {exc}")
            else:
                _observe(observe, self, name, grpc.StatusCode.OK)
                return answer
            raise AssertionError("unreachable: abort raises")

        return wrapper

    return decorate


def rpc_stream_errors() -> Callable[[Callable[..., AsyncIterator[R]]], Callable[..., AsyncIterator[R]]]:
    """Decorate an async generator servicer method `(self, request)`: errors become status codes (Rule 2)."""

    def decorate(method: Callable[..., AsyncIterator[R]]) -> Callable[..., AsyncIterator[R]]:
        name = method.__name__

        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[R]:
            try:
                async for message in method(self, request):
                    yield message
            except LazyflyError as exc:
                log.info("%s: %s: %s", name, type(exc).__name__, exc)
                await context.abort(status_code(exc), str(exc))
            except Exception as exc:
                log.exception("%s failed", name)
                await context.abort(grpc.StatusCode.UNKNOWN, f"{name}: {type(exc).__name__}: {exc}")

        return wrapper

    return decorate


def _observe(observe: CallObserver | None, servicer: Any, name: str, code: grpc.StatusCode) -> None:
    if observe is not None:
        observe(servicer, name, code)
