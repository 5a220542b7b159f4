"""DfdaemonUpload (dfdaemon.v2) on the upload port: what other peers and the scheduler call.

SyncPieces tells a child which of its interested pieces this peer holds, now and as they land;
DownloadTask lets the scheduler start a download here (a seed peer's trigger); StatTask and
DeleteTask as in task_calls. The cache and persistent variants answer UNIMPLEMENTED (the base
class's default): this peer stores standard tasks only.

Rule: SyncPieces ends once every interested piece was announced, or when no download of the task
is running here any more (what is not stored then will not come from this peer).
"""

from collections.abc import AsyncIterator

from dragonfly_api import dfdaemon_pb2, dfdaemon_pb2_grpc

from lazyfly.errors import NotFound
from lazyfly.p2p.download.manager import TaskManager
from lazyfly.p2p.rpc.task_calls import TaskCalls
from lazyfly.p2p.task.pieces import piece
from lazyfly.rpc.binding import rpc_stream_errors

_stream = rpc_stream_errors()


class UploadService(TaskCalls, dfdaemon_pb2_grpc.DfdaemonUploadServicer):
    """The upload service of one peer, announcing pieces at `ip` and `vortex_port`."""

    def __init__(self, manager: TaskManager, host_id: str, ip: str, vortex_port: int) -> None:
        super().__init__(manager, host_id)
        self.ip = ip
        self.vortex_port = vortex_port

    @_stream
    async def SyncPieces(
        self, request: dfdaemon_pb2.SyncPiecesRequest
    ) -> AsyncIterator[dfdaemon_pb2.SyncPiecesResponse]:
        progress = self.manager.progress(request.task_id)
        if progress is None:
            raise NotFound(f"task {request.task_id} is not on this peer")
        await progress.wait_started()
        assert progress.content_length is not None and progress.piece_length is not None
        interested = set(request.interested_piece_numbers) or set(range(progress.piece_count))
        interested &= set(range(progress.piece_count))
        sent: set[int] = set()
        while True:
            for number in sorted((progress.landed & interested) - sent):
                one = piece(number, progress.content_length, progress.piece_length)
                sent.add(number)
                yield dfdaemon_pb2.SyncPiecesResponse(
                    number=number, offset=one.offset, length=one.length, ip=self.ip, tcp_port=self.vortex_port
                )
            if sent >= interested or progress.runs == 0:
                return
            await progress.wait_change()
