"""The dfdaemon.v2 calls both services share: DownloadTask's progress stream, StatTask, DeleteTask.

Rules:
- Rule 1: DownloadTask answers `download_task_started_response` once the size is known (with the
  pieces already stored), then one `download_piece_finished_response` per piece as it lands, and
  ends when every piece is stored; a download that fails ends the stream with its error.
- Rule 2: with an `output_path`, the finished content is checked against `digest` (sha256:HEX)
  when one is given, then hard-linked to a temporary name beside the output (copied when the
  output is on another file system, unless `force_hard_link`) and renamed into place: a reader
  never sees a half-written file, and a big file costs no second copy (Dragonfly does the same;
  the stored pieces keep their CRCs, so a user who writes into the output is caught when the
  piece is read again). A digest mismatch
  deletes the task (its origin sent something else) and is Corrupt.
- Rule 3: a task in use (a download or a reader) is not deleted: FailedPrecondition.
"""

import errno
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from dragonfly_api import common_pb2, dfdaemon_pb2
from google.protobuf import empty_pb2

from lazyfly.digest import sha256_file
from lazyfly.errors import Corrupt, FailedPrecondition, InvalidArgument, NotFound
from lazyfly.p2p.download.manager import TaskManager
from lazyfly.p2p.download.progress import TaskProgress
from lazyfly.p2p.download.request import DownloadRequest
from lazyfly.p2p.task.pieces import piece
from lazyfly.rpc.binding import rpc_errors, rpc_stream_errors

HASH_BLOCK = 4 << 20
_rpc, _stream = rpc_errors(), rpc_stream_errors()


class TaskCalls:
    """DownloadTask, StatTask and DeleteTask as both dfdaemon services serve them (a mixin)."""

    def __init__(self, manager: TaskManager, host_id: str) -> None:
        self.manager = manager
        self.host_id = host_id

    @_stream
    async def DownloadTask(
        self, request: dfdaemon_pb2.DownloadTaskRequest
    ) -> AsyncIterator[dfdaemon_pb2.DownloadTaskResponse]:
        async for message in download_task(self.manager, request.download, self.host_id):
            yield message

    @_rpc
    async def StatTask(self, request: dfdaemon_pb2.StatTaskRequest) -> common_pb2.Task:
        return stat_task(self.manager, request.task_id)

    @_rpc
    async def DeleteTask(self, request: dfdaemon_pb2.DeleteTaskRequest) -> empty_pb2.Empty:
        await delete_task(self.manager, request.task_id)
        return empty_pb2.Empty()


def _piece_message(progress: TaskProgress, number: int) -> common_pb2.Piece:
    assert progress.content_length is not None and progress.piece_length is not None
    one = piece(number, progress.content_length, progress.piece_length)
    return common_pb2.Piece(number=one.number, offset=one.offset, length=one.length)


async def download_task(
    manager: TaskManager, download: common_pb2.Download, host_id: str
) -> AsyncIterator[dfdaemon_pb2.DownloadTaskResponse]:
    """The DownloadTask stream of one download (Rules 1, 2)."""
    request = DownloadRequest.from_proto(download)
    if not request.url:
        raise InvalidArgument("DownloadTask: the download has no url")
    ids = {"host_id": host_id, "task_id": request.task_id, "peer_id": host_id}
    progress = await manager.download(request)
    progress.readers += 1
    try:
        assert progress.content_length is not None
        told = set(progress.landed)
        started = dfdaemon_pb2.DownloadTaskStartedResponse(
            content_length=progress.content_length,
            pieces=[_piece_message(progress, n) for n in sorted(told)],
            is_finished=progress.complete,
        )
        yield dfdaemon_pb2.DownloadTaskResponse(**ids, download_task_started_response=started)
        while True:
            for number in sorted(progress.landed - told):
                told.add(number)
                finished = dfdaemon_pb2.DownloadPieceFinishedResponse(piece=_piece_message(progress, number))
                yield dfdaemon_pb2.DownloadTaskResponse(**ids, download_piece_finished_response=finished)
            if progress.complete:
                break
            if progress.runs == 0:
                raise progress.error or NotFound(f"task {progress.task_id}: the download stopped unfinished")
            await progress.wait_change()
        if download.HasField("output_path"):
            await _export(manager, request, Path(download.output_path), download.force_hard_link)
    finally:
        progress.readers -= 1


async def _export(manager: TaskManager, request: DownloadRequest, output: Path, hard_link: bool) -> None:
    source = manager.store.content.path(request.task_id)
    if request.digest:
        algorithm, _, expected = request.digest.partition(":")
        if algorithm != "sha256" or not expected:
            raise InvalidArgument(f"digest {request.digest!r}: expected sha256:HEX")
        actual, _ = await anyio.to_thread.run_sync(sha256_file, str(source), HASH_BLOCK)
        if actual != f"sha256:{expected.lower()}":
            await anyio.to_thread.run_sync(manager.store.delete, request.task_id)
            manager.forget(request.task_id)
            raise Corrupt(
                f"task {request.task_id} ({request.url}): content is {actual}, expected {request.digest}"
            )
    await anyio.to_thread.run_sync(_place, source, output, hard_link)
    await anyio.to_thread.run_sync(manager.store.touch, request.task_id)


def _place(source: Path, output: Path, hard_link_only: bool) -> None:
    if not output.is_absolute():
        raise InvalidArgument(f"output path {output} is not absolute")
    temporary = output.with_name(f".{output.name}.lazyfly-{os.getpid()}")
    try:
        try:
            os.link(source, temporary)
        except OSError as exc:
            if hard_link_only or exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            shutil.copyfile(source, temporary)
        os.replace(temporary, output)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise InvalidArgument(f"output path {output}: {exc.strerror or exc}") from exc


def stat_task(manager: TaskManager, task_id: str) -> common_pb2.Task:
    """The Task message of a task this peer knows."""
    progress = manager.progress(task_id)
    record = manager.store.meta.task(task_id)
    if progress is None or record is None:
        raise NotFound(f"task {task_id} is not on this peer")
    state = (
        "Succeeded"
        if progress.complete
        else "Running"
        if progress.runs
        else "Failed"
        if progress.error
        else "Pending"
    )
    return common_pb2.Task(
        id=task_id,
        type=common_pb2.TaskType.STANDARD,
        url=record.url,
        content_length=record.content_length,
        piece_count=progress.piece_count,
        pieces=[_piece_message(progress, n) for n in sorted(progress.landed)],
        state=state,
        peer_count=1,
        has_available_peer=bool(progress.landed),
    )


async def delete_task(manager: TaskManager, task_id: str) -> None:
    """Delete a task's content and records (Rule 3)."""
    progress = manager.progress(task_id)
    if progress is None:
        raise NotFound(f"task {task_id} is not on this peer")
    if progress.in_use:
        raise FailedPrecondition(f"task {task_id} is in use (downloading or being read)")
    await anyio.to_thread.run_sync(manager.store.delete, task_id)
    manager.forget(task_id)
