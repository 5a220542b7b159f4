"""`lazyfly get` (dfget): a download through the local peer's DfdaemonDownload socket.

Rules:
- Rule 1: the peer places the file at the output path (temporary name, then rename) and checks the
  digest; this client shows progress from the stream and checks the digest again on the file it got.
- Rule 2: when no peer answers on the socket, the file is downloaded straight from the origin (as
  dfget does), unless `require_peer`; a download is never half-written at the output path.
- Rule 3 (STYLE 7): the whole call runs under the caller's timeout; a stream that stays silent for
  DEFAULT_IDLE_TIMEOUT is Unavailable.
"""

import hashlib
import os
from pathlib import Path

import anyio
import grpc
from dragonfly_api import common_pb2, dfdaemon_pb2, dfdaemon_pb2_grpc

from lazyfly.errors import Corrupt, Unavailable
from lazyfly.p2p.download.request import DownloadRequest
from lazyfly.progress import ProgressSink
from lazyfly.rpc.status import error_from

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_IDLE_TIMEOUT = 300.0
CHUNK = 1 << 20


async def get(
    request: DownloadRequest,
    output: Path,
    socket_path: Path,
    progress: ProgressSink,
    *,
    require_peer: bool = False,
) -> str:
    """Download `request` to `output` (absolute); return how ("peer" or "origin") (Rules 1, 2)."""
    try:
        await _through_peer(request, output, socket_path, progress)
        how = "peer"
    except _NoPeer as exc:
        if require_peer:
            raise Unavailable(f"peer at {socket_path}: {exc}") from exc
        await _from_origin(request, output, progress)
        how = "origin"
    if request.digest:
        await anyio.to_thread.run_sync(_check_digest, output, request.digest)
    return how


class _NoPeer(Exception):
    """No peer daemon answers on the socket."""


async def _through_peer(
    request: DownloadRequest, output: Path, socket_path: Path, progress: ProgressSink
) -> None:
    if not await anyio.Path(socket_path).exists():
        raise _NoPeer("no socket")
    download: common_pb2.Download = request.to_proto()
    download.output_path = str(output)
    async with grpc.aio.insecure_channel(f"unix:{socket_path}") as channel:
        try:
            with anyio.fail_after(DEFAULT_CONNECT_TIMEOUT):
                await channel.channel_ready()
        except TimeoutError as exc:
            raise _NoPeer("not answering") from exc
        call = dfdaemon_pb2_grpc.DfdaemonDownloadStub(channel).DownloadTask(
            dfdaemon_pb2.DownloadTaskRequest(download=download)
        )
        try:
            while True:
                with anyio.fail_after(DEFAULT_IDLE_TIMEOUT):
                    message = await call.read()
                if message is grpc.aio.EOF:
                    return
                kind = message.WhichOneof("response")
                if kind == "download_task_started_response":
                    started = message.download_task_started_response
                    progress.add_total(started.content_length)
                    progress.advance(sum(p.length for p in started.pieces))
                elif kind == "download_piece_finished_response":
                    progress.advance(message.download_piece_finished_response.piece.length)
        except grpc.aio.AioRpcError as exc:
            raise error_from(exc.code(), exc.details() or "") from exc
        except TimeoutError as exc:
            raise Unavailable(f"peer at {socket_path}: no progress for {DEFAULT_IDLE_TIMEOUT:.0f} s") from exc


async def _from_origin(request: DownloadRequest, output: Path, progress: ProgressSink) -> None:
    import httpx  # only without a peer: a `get` through one starts faster without it

    temporary = output.with_name(f".{output.name}.lazyfly-{os.getpid()}")
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0), trust_env=False) as client:
            async with client.stream(
                "GET", request.url, headers=request.header_map, follow_redirects=True
            ) as got:
                if got.status_code != 200:
                    raise Unavailable(f"origin {request.url}: answered {got.status_code}")
                progress.add_total(int(got.headers.get("Content-Length", 0)))
                with temporary.open("wb") as f:
                    async for chunk in got.aiter_bytes(CHUNK):
                        f.write(chunk)
                        progress.advance(len(chunk))
        os.replace(temporary, output)
    except httpx.TransportError as exc:
        raise Unavailable(f"origin {request.url}: {exc!r}") from exc
    finally:
        temporary.unlink(missing_ok=True)


def _check_digest(path: Path, digest: str) -> None:
    algorithm, _, expected = digest.partition(":")
    hasher = hashlib.new(algorithm)
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            hasher.update(block)
    if hasher.hexdigest() != expected.lower():
        path.unlink(missing_ok=True)
        raise Corrupt(f"{path}: {algorithm} is {hasher.hexdigest()}, expected {expected}")
