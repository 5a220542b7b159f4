"""CONNECT: the proxy's blind TCP tunnel, for HTTPS it does not intercept (as Dragonfly's proxy does).

The HTTP server hands over a connection whose request was `CONNECT host:port`. This module opens the
TCP connection, answers through the connection's h11 state, then only relays bytes: after the 200
the stream is no longer HTTP and nothing here looks at it.

Rules:
- Rule 1 (target): the target is authority-form `host:port` (`[v6addr]:port` for IPv6), port
  1–65535; anything else is TunnelRefused(400).
- Rule 2 (connect): the upstream connection must open within DEFAULT_CONNECT_TIMEOUT; a refusal, an
  unknown name or a timeout is TunnelRefused(502) naming the target. The server answers a
  TunnelRefused (it owns error answers) and closes the connection.
- Rule 3 (relay): after `200 Connection Established`, bytes the client sent behind its request go
  upstream first, then both directions are copied until both have ended. The end of one direction is
  passed on as a half-close (as tokio's `copy_bidirectional`, which Dragonfly's proxy uses), so a
  client that shuts down its writing side still gets the rest of the answer. An error on either side
  ends both.
- Rule 4 (bounded waits, STYLE 7): a tunnel in which no byte moves either way for
  DEFAULT_TUNNEL_IDLE_TIMEOUT is closed; each activity pushes that deadline back.
"""

import logging

import anyio
import anyio.abc
import h11

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_SEND_TIMEOUT = 30.0
DEFAULT_TUNNEL_IDLE_TIMEOUT = 600.0
RECEIVE_SIZE = 64 << 10
_BROKEN = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class TunnelRefused(Exception):
    """The tunnel was not opened; `status` is the answer the client gets (Rules 1 and 2)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_authority(target: str) -> tuple[str, int]:
    """The (host, port) of a CONNECT target (Rule 1)."""
    host, colon, port_text = target.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TunnelRefused(400, f"proxy: CONNECT target {target!r} is not host:port")
    return host, int(port_text)


async def tunnel(client: anyio.abc.SocketStream, conn: h11.Connection, target: str) -> None:
    """Answer the CONNECT request just read on `client` and relay bytes until the tunnel ends.

    `conn` is the connection's h11 state, with the request (and its end) already received. Raises
    TunnelRefused before answering if the tunnel cannot be opened. The caller closes `client`
    afterwards; this closes the upstream connection.
    """
    host, port = parse_authority(target)
    try:
        with anyio.fail_after(DEFAULT_CONNECT_TIMEOUT):
            upstream = await anyio.connect_tcp(host, port)
    except (OSError, TimeoutError) as exc:
        log.info("proxy: CONNECT %s failed: %r", target, exc)
        raise TunnelRefused(502, f"proxy: cannot connect to {target}: {exc!r}") from exc
    async with upstream:
        try:
            with anyio.fail_after(DEFAULT_SEND_TIMEOUT):
                response = h11.Response(status_code=200, reason=b"Connection Established", headers=[])
                await client.send(conn.send(response))
                leftover, _ = conn.trailing_data
                if leftover:
                    await upstream.send(leftover)
        except (*_BROKEN, TimeoutError):
            return
        await relay(client, upstream)


async def relay(a: anyio.abc.SocketStream, b: anyio.abc.SocketStream) -> None:
    """Copy bytes between `a` and `b` both ways until both directions end (Rules 3 and 4)."""
    with anyio.move_on_after(DEFAULT_TUNNEL_IDLE_TIMEOUT) as idle:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_copy, a, b, idle, tg.cancel_scope)
            tg.start_soon(_copy, b, a, idle, tg.cancel_scope)
    if idle.cancelled_caught:
        log.info("proxy: tunnel idle for %ss, closed", DEFAULT_TUNNEL_IDLE_TIMEOUT)


async def _copy(
    source: anyio.abc.SocketStream,
    sink: anyio.abc.SocketStream,
    idle: anyio.CancelScope,
    both: anyio.CancelScope,
) -> None:
    try:
        while True:
            try:
                data = await source.receive(RECEIVE_SIZE)
            except anyio.EndOfStream:
                await sink.send_eof()
                return
            idle.deadline = anyio.current_time() + DEFAULT_TUNNEL_IDLE_TIMEOUT
            await sink.send(data)
    except _BROKEN:
        both.cancel()  # one side is gone: the other direction has nowhere to go either
