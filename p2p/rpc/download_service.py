"""DfdaemonDownload (dfdaemon.v2) on the peer's unix socket: what `lazyfly get` and local tools call.

DownloadTask streams a download's progress and places the file at `output_path`; StatTask and
DeleteTask as in task_calls. The other methods answer UNIMPLEMENTED (the base class's default).
"""

from dragonfly_api import dfdaemon_pb2_grpc

from lazyfly.p2p.rpc.task_calls import TaskCalls


class DownloadService(TaskCalls, dfdaemon_pb2_grpc.DfdaemonDownloadServicer):
    """The local download service of one peer."""
