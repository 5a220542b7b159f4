"""gRPC bindings made from a service's protobuf descriptor, for the protos the project owns.

grpcio-tools would also generate a `_pb2_grpc` module: a servicer base class whose methods answer
UNIMPLEMENTED until overridden, a client class and a registration function. Made from the
descriptor instead, a server must implement every method of the service (a missing one fails at
start-up, not at the first call), and the client and the handler can never disagree with the
messages in `_pb2`.

Rules:
- Rule 1: only unary-unary and unary-stream methods (all that snapshots v1 has); a client-streaming
  method is refused when the binding is made.
- Rule 2: `abort_with` is the one place a servicer's error categories become status codes
  (lazyfly.rpc.status); anything else is logged and answered UNKNOWN. `rpc_errors` (unary methods)
  and `rpc_stream_errors` (server-streaming methods written as async generators) apply it; a
  bidirectional stream the binding does not make (the scheduler's AnnouncePeer) calls it itself.
"""

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

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
            except Exception as exc:
                _observe(observe, self, name, status_code(exc))
                await abort_with(context, name, exc)
            _observe(observe, self, name, grpc.StatusCode.OK)
            return answer

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
            except Exception as exc:
                await abort_with(context, name, exc)

        return wrapper

    return decorate


async def abort_with(context: grpc.aio.ServicerContext, what: str, exc: Exception) -> NoReturn:
    """End the call `what` with the status of `exc` (Rule 2): a LazyflyError's category, logged as
    an answer; anything else UNKNOWN, logged with its traceback."""
    if isinstance(exc, LazyflyError):
        log.info("%s: %s: %s", what, type(exc).__name__, exc)
        await context.abort(status_code(exc), str(exc))
    log.error("%s failed", what, exc_info=exc)
    await context.abort(grpc.StatusCode.UNKNOWN, f"{what}: {type(exc).__name__}: {exc}")
    raise AssertionError("unreachable: abort raises")


def _observe(observe: CallObserver | None, servicer: Any, name: str, code: grpc.StatusCode) -> None:
    if observe is not None:
        observe(servicer, name, code)
