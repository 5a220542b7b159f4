"""One download of a task by this peer: the origin's size, the scheduler's answers, the pieces.

Rules:
- Rule 1: a task the store holds finished is served from disk without asking anybody; otherwise
  its size comes from the store (a download started before) or from the origin (HEAD), and the
  piece length from Dragonfly's rule or the request.
- Rule 2: with a scheduler, the peer registers (AnnouncePeer) and follows its answers in the order
  of REFERENCE.md §2: an empty task is finished at once; parents are used until they run out, then
  the peer asks for others (reschedule); back-to-source only when told. Every piece stored is
  reported, every failure too.
- Rule 3: a scheduler that cannot be reached, or that breaks off the conversation, never fails the
  download: the missing pieces come from the origin (unless the request forbids back-to-source).
- Rule 4: the task is marked finished in the store only when all its pieces are there; a download
  of some pieces (a range) stores those and leaves the task open.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import httpx
from dragonfly_api import common_pb2, scheduler_pb2_grpc

from lazyfly.errors import FailedPrecondition, LazyflyError, Unavailable
from lazyfly.oci.auth import RegistryAuth
from lazyfly.p2p.download.parents import Parent, fetch_from_parents
from lazyfly.p2p.download.progress import TaskProgress
from lazyfly.p2p.download.request import DownloadRequest
from lazyfly.p2p.download.scheduler_session import SchedulerSession
from lazyfly.p2p.metrics import PeerMetrics
from lazyfly.p2p.rate_limiter import RateLimiter
from lazyfly.p2p.storage.piece_meta import PieceRecord
from lazyfly.p2p.storage.piece_store import PieceStore
from lazyfly.p2p.task.pieces import piece_length_for
from lazyfly.p2p.task.source import content_length, download_from_source

log = logging.getLogger(__name__)
MAX_RESCHEDULES = 10


@dataclass(frozen=True)
class PeerIdentity:
    """Who this peer is to the scheduler."""

    ip: str
    hostname: str
    seed: bool = False

    @property
    def host_id(self) -> str:
        """`{ip}-{hostname}`, as Dragonfly names hosts."""
        return f"{self.ip}-{self.hostname}"

    def new_peer_id(self) -> str:
        """A fresh peer id for one download."""
        return f"{self.host_id}-{uuid.uuid4()}" + ("-seed" if self.seed else "")


@dataclass
class Bandwidths:
    """The peer's download limits: downloads someone waits for, and background (prefetch) ones."""

    download: RateLimiter
    prefetch: RateLimiter


class Conductor:
    """Runs downloads: store, origin client, scheduler (None: none) and limits given by the daemon."""

    def __init__(
        self,
        store: PieceStore,
        http: httpx.AsyncClient,
        scheduler: tuple[str, scheduler_pb2_grpc.SchedulerStub] | None,
        identity: PeerIdentity,
        bandwidths: Bandwidths,
        metrics: PeerMetrics,
        concurrency: int,
    ) -> None:
        self.store = store
        self.http = http
        self.scheduler = scheduler
        self.identity = identity
        self.bandwidths = bandwidths
        self.metrics = metrics
        self.concurrency = concurrency
        self._auths: dict[str, RegistryAuth] = {}

    async def run(self, request: DownloadRequest, progress: TaskProgress, numbers: set[int] | None) -> None:
        """Download the pieces `numbers` (None: all) of the request's task into the store."""
        task_id = request.task_id
        known = await anyio.to_thread.run_sync(self.store.meta.task, task_id)
        if known is None:
            auth = await self._auth(request)
            length = await content_length(self.http, request.url, request.header_map, auth)
            plen = piece_length_for(length, request.piece_length)
            known = await anyio.to_thread.run_sync(self.store.register, task_id, request.url, length, plen)
        stored = {r.number for r in await anyio.to_thread.run_sync(self.store.meta.pieces_of, task_id)}
        progress.start(known.content_length, known.piece_length, stored)
        wanted = set(range(progress.piece_count)) if numbers is None else set(numbers)
        if not known.finished and (wanted - progress.landed or progress.piece_count == 0):
            self.metrics.tasks.labels("started").inc()
            if self.scheduler is None:
                await self._from_source(request, progress, wanted, None)
            else:
                await self._with_scheduler(request, progress, wanted)
        if progress.complete and not known.finished:
            # finish is idempotent: a back-to-source run may have finished the task already
            await anyio.to_thread.run_sync(self.store.finish, task_id)
            self.metrics.tasks.labels("finished").inc()

    async def _with_scheduler(
        self, request: DownloadRequest, progress: TaskProgress, wanted: set[int]
    ) -> None:
        where, stub = self.scheduler  # type: ignore[misc]
        peer_id = self.identity.new_peer_id()
        session = SchedulerSession(stub, where, self.identity.host_id, progress.task_id, peer_id)
        try:
            await session.register(request.to_proto(progress.content_length, progress.piece_length))
            await self._follow(session, request, progress, wanted)
        except Unavailable as exc:
            if progress.landed >= wanted:
                return
            if request.disable_back_to_source:
                raise
            log.warning("task %s: %s; going to the origin for the rest", progress.task_id, exc)
            await self._from_source(request, progress, wanted, None)
        finally:
            await session.close()

    async def _follow(
        self, session: SchedulerSession, request: DownloadRequest, progress: TaskProgress, wanted: set[int]
    ) -> None:
        started = False
        for _ in range(MAX_RESCHEDULES + 1):
            answer = await session.answer()
            kind = answer.WhichOneof("response")
            if kind == "empty_task_response":
                await session.started()
                await session.finished(back_to_source=False)
                return
            if kind == "need_back_to_source_response":
                if request.disable_back_to_source:
                    await session.failed(False, "back-to-source is disabled for this download")
                    raise FailedPrecondition(
                        f"task {progress.task_id}: no parent, and back-to-source is disabled"
                    )
                await self._back_to_source(
                    session, request, progress, wanted, answer.need_back_to_source_response.description
                )
                return
            if kind != "normal_task_response":
                raise Unavailable(f"{session.where}: answered {kind}, which this peer does not handle")
            if not started:
                await session.started()
                started = True
            candidates = list(answer.normal_task_response.candidate_parents)
            missing, blocked = await self._from_parents(session, request, progress, wanted, candidates)
            if not missing:
                await session.finished(back_to_source=False)
                return
            failed = [c for c in candidates if c.id in blocked] or candidates
            await session.reschedule(failed, f"{len(missing)} pieces missing after {len(candidates)} parents")
        await session.failed(False, "no parent could give every piece")
        raise Unavailable(f"task {progress.task_id}: parents ran out after {MAX_RESCHEDULES} reschedules")

    async def _from_parents(
        self,
        session: SchedulerSession,
        request: DownloadRequest,
        progress: TaskProgress,
        wanted: set[int],
        candidates: list[common_pb2.Peer],
    ) -> tuple[set[int], set[str]]:
        parents = [Parent(c.id, c.host.ip, c.host.port, c.host.download_port) for c in candidates]

        async def finished(record: PieceRecord, parent: Parent, cost: float) -> None:
            self.metrics.piece_bytes.labels("remote_peer").inc(record.length)
            await session.piece_finished(record, parent.id, cost)

        async def failed(number: int, parent: Parent) -> None:
            self.metrics.piece_failures.labels("remote_peer").inc()
            await session.piece_failed(number, parent.id)

        return await fetch_from_parents(
            parents,
            self.store,
            progress,
            wanted,
            self.identity.host_id,
            on_finished=finished,
            on_failed=failed,
            bandwidth=self._bandwidth(request),
            concurrency=self.concurrency,
        )

    async def _back_to_source(
        self,
        session: SchedulerSession,
        request: DownloadRequest,
        progress: TaskProgress,
        wanted: set[int],
        why: str,
    ) -> None:
        await session.back_to_source_started(why)
        try:
            await self._from_source(request, progress, wanted, session)
        except LazyflyError as exc:
            await session.failed(True, str(exc))
            raise
        await session.finished(back_to_source=True)

    async def _from_source(
        self,
        request: DownloadRequest,
        progress: TaskProgress,
        wanted: set[int],
        session: SchedulerSession | None,
    ) -> None:
        began = time.monotonic()

        async def stored(record: PieceRecord) -> None:
            nonlocal began
            progress.add(record.number)
            self.metrics.piece_bytes.labels("back_to_source").inc(record.length)
            if session is not None:
                now = time.monotonic()
                await session.piece_back_to_source_finished(record, now - began)
                began = now

        await download_from_source(
            self.store,
            self.http,
            request.url,
            progress.task_id,
            headers=request.header_map,
            concurrency=self.concurrency,
            numbers=wanted,
            order=progress.order,
            on_piece=stored,
            bandwidth=self._bandwidth(request),
            auth=await self._auth(request),
        )

    def _bandwidth(self, request: DownloadRequest) -> RateLimiter:
        return self.bandwidths.prefetch if request.prefetch else self.bandwidths.download

    async def _auth(self, request: DownloadRequest) -> httpx.Auth | None:
        if any(name.lower() == "authorization" for name in request.header_map):
            return None  # the client's own credentials go through as they are
        host = urlsplit(request.url).netloc
        if not host:
            return None
        if host not in self._auths:  # one per origin: its credentials are read once, its token reused
            # a credential helper may block: not on the event loop
            self._auths[host] = await anyio.to_thread.run_sync(RegistryAuth.from_docker_config, host)
        return self._auths[host]
