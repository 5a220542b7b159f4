"""containerd's snapshots v1 gRPC service: protobuf in, snapshotter calls, protobuf out.

Rules:
- Rule 1 (errors): error categories become status codes through lazyfly.rpc.binding.rpc_errors;
  an unexpected exception is logged and answered UNKNOWN; every message names the key. Every
  answer is counted by method and code.
- Rule 2 (lazy layers first): a Prepare whose labels name a lazyfly layer is committed by
  RemoteLayers and answered ALREADY_EXISTS; any other Prepare is an ordinary one.
- Rule 3 (served before mounted): before mounts over a lazyfly image are returned (Prepare, View,
  Mounts), the fusefs daemon is made to serve that image, so a restart never leaves a mount whose
  lower directory is missing.
- Rule 4: blocking work (SQLite, directories) runs in worker threads, never on the event loop.
"""

import logging
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

import anyio
import grpc
from google.protobuf import empty_pb2, timestamp_pb2

from lazyfly.errors import AlreadyExists, FailedPrecondition, LazyflyError
from lazyfly.rpc.binding import rpc_errors
from lazyfly.rpc.status import status_code
from lazyfly.snapshotter.metrics import SnapshotterMetrics
from lazyfly.snapshotter.model import Info, Kind, Mount
from lazyfly.snapshotter.proto import snapshots_pb2 as pb
from lazyfly.snapshotter.remote_layers import RemoteLayers
from lazyfly.snapshotter.snapshotter import MountPlan, Snapshotter

log = logging.getLogger(__name__)
LIST_BATCH = 100
R = TypeVar("R")


def _count_call(service: "SnapshotsService", method: str, code: grpc.StatusCode) -> None:
    service.metrics.calls.labels(method, code.name).inc()


_rpc = rpc_errors(_count_call)


class SnapshotsService:
    """The Snapshots service over one Snapshotter and its lazy layers."""

    def __init__(self, snapshotter: Snapshotter, remote: RemoteLayers, metrics: SnapshotterMetrics) -> None:
        self.snapshotter = snapshotter
        self.remote = remote
        self.metrics = metrics

    @_rpc
    async def Prepare(self, request: pb.PrepareSnapshotRequest) -> pb.PrepareSnapshotResponse:
        labels = dict(request.labels)
        if await self.remote.try_prepare(request.parent, labels):
            raise AlreadyExists(f"snapshot {request.key!r}: its layer is committed lazily")
        await self._serve_image_below(request.parent)
        plan = await anyio.to_thread.run_sync(self.snapshotter.prepare, request.key, request.parent, labels)
        return pb.PrepareSnapshotResponse(mounts=await self._mounts(plan))

    @_rpc
    async def View(self, request: pb.ViewSnapshotRequest) -> pb.ViewSnapshotResponse:
        await self._serve_image_below(request.parent)
        plan = await anyio.to_thread.run_sync(
            self.snapshotter.view, request.key, request.parent, dict(request.labels)
        )
        return pb.ViewSnapshotResponse(mounts=await self._mounts(plan))

    @_rpc
    async def Mounts(self, request: pb.MountsRequest) -> pb.MountsResponse:
        plan = await anyio.to_thread.run_sync(self.snapshotter.mounts, request.key)
        return pb.MountsResponse(mounts=await self._mounts(plan))

    @_rpc
    async def Commit(self, request: pb.CommitSnapshotRequest) -> empty_pb2.Empty:
        await anyio.to_thread.run_sync(
            self.snapshotter.commit, request.name, request.key, dict(request.labels)
        )
        return empty_pb2.Empty()

    @_rpc
    async def Remove(self, request: pb.RemoveSnapshotRequest) -> empty_pb2.Empty:
        await anyio.to_thread.run_sync(self.snapshotter.remove, request.key)
        return empty_pb2.Empty()

    @_rpc
    async def Stat(self, request: pb.StatSnapshotRequest) -> pb.StatSnapshotResponse:
        info = await anyio.to_thread.run_sync(self.snapshotter.stat, request.key)
        return pb.StatSnapshotResponse(info=info_to_proto(info))

    @_rpc
    async def Update(self, request: pb.UpdateSnapshotRequest) -> pb.UpdateSnapshotResponse:
        info = info_from_proto(request.info)
        paths = list(request.update_mask.paths)
        updated = await anyio.to_thread.run_sync(self.snapshotter.update, info, paths)
        return pb.UpdateSnapshotResponse(info=info_to_proto(updated))

    async def List(
        self, request: pb.ListSnapshotsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListSnapshotsResponse]:
        try:
            infos = await anyio.to_thread.run_sync(self.snapshotter.walk, list(request.filters))
        except LazyflyError as exc:
            await context.abort(status_code(exc), str(exc))
        for start in range(0, len(infos), LIST_BATCH):
            batch = infos[start : start + LIST_BATCH]
            yield pb.ListSnapshotsResponse(info=[info_to_proto(info) for info in batch])

    @_rpc
    async def Usage(self, request: pb.UsageRequest) -> pb.UsageResponse:
        usage = await anyio.to_thread.run_sync(self.snapshotter.usage, request.key)
        return pb.UsageResponse(size=usage.size, inodes=usage.inodes)

    @_rpc
    async def Cleanup(self, request: pb.CleanupRequest) -> empty_pb2.Empty:
        await anyio.to_thread.run_sync(self.snapshotter.cleanup)
        await self.remote.collect_unused_images()
        return empty_pb2.Empty()

    async def _serve_image_below(self, parent: str) -> None:
        image = await anyio.to_thread.run_sync(self.snapshotter.image_below, parent)
        if image:
            await self.remote.serve_image(image)

    async def _mounts(self, plan: MountPlan) -> Sequence[pb.Mount]:
        if plan.image:
            await self.remote.serve_image(plan.image)
        return [mount_to_proto(mount) for mount in plan.mounts]


def mount_to_proto(mount: Mount) -> pb.Mount:
    """A Mount message."""
    return pb.Mount(type=mount.type, source=mount.source, options=mount.options)


def info_to_proto(info: Info) -> pb.Info:
    """An Info message."""
    return pb.Info(
        name=info.name,
        parent=info.parent,
        kind=int(info.kind),
        created_at=_timestamp(info.created_ns),
        updated_at=_timestamp(info.updated_ns),
        labels=info.labels,
    )


def info_from_proto(message: pb.Info) -> Info:
    """An Info from its message (only name and labels matter to Update)."""
    if message.kind not in Kind._value2member_map_:
        raise FailedPrecondition(f"snapshot {message.name!r}: unknown kind {message.kind}")
    return Info(
        name=message.name, parent=message.parent, kind=Kind(message.kind), labels=dict(message.labels)
    )


def _timestamp(ns: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)
