"""`lazyfly scheduler` over real gRPC on loopback, called with the dragonfly-api stubs: hosts, and
AnnouncePeer streams driven as peers and a seed peer (a small DfdaemonUpload server in the test)."""

import subprocess
from collections.abc import Iterator

import anyio
import grpc
import pytest
from dragonfly_api import common_pb2, dfdaemon_pb2, dfdaemon_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from google.protobuf import duration_pb2, empty_pb2
from google.protobuf.message_factory import GetMessageClass
from integration.cli import LAZYFLY

from lazyfly.local_registry import free_port
from lazyfly.processes import stop_processes

pytestmark = pytest.mark.integration
START_TIMEOUT = 30.0
ANSWER_TIMEOUT = 15.0  # the scheduler may retry for ~10 s while a seed is on its way
URL = "http://origin.invalid/blobs/sha256:abc"
LENGTH = 8 << 20
PIECE = 4 << 20


@pytest.fixture
def anyio_backend():
    return "asyncio"  # grpc.aio


@pytest.fixture
def scheduler_address() -> Iterator[str]:
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [str(LAZYFLY), "scheduler", "--listen", address], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
        yield address
    finally:
        channel.close()
        stop_processes([process], 15)


@pytest.fixture
def scheduler(scheduler_address: str):
    with grpc.insecure_channel(scheduler_address) as channel:
        yield scheduler_pb2_grpc.SchedulerStub(channel)


def host(host_id: str, seed: bool = False) -> common_pb2.Host:
    return common_pb2.Host(
        id=host_id, type=1 if seed else 0, hostname=host_id, ip="10.0.0.7", port=4000, download_port=4005,
        network=common_pb2.Network(idc="dc1", location="eu|fr"),
    )  # fmt: skip


def test_announced_hosts_are_listed_and_deleted(scheduler):
    scheduler.AnnounceHost(
        scheduler_pb2.AnnounceHostRequest(host=host("10.0.0.7-seed", seed=True)), timeout=10
    )
    scheduler.AnnounceHost(scheduler_pb2.AnnounceHostRequest(host=host("10.0.0.8-a")), timeout=10)
    listed = {h.id: h for h in scheduler.ListHosts(empty_pb2.Empty(), timeout=10).hosts}
    assert set(listed) == {"10.0.0.7-seed", "10.0.0.8-a"}
    assert (listed["10.0.0.7-seed"].type, listed["10.0.0.7-seed"].network.location) == (1, "eu|fr")
    scheduler.DeleteHost(scheduler_pb2.DeleteHostRequest(host_id="10.0.0.8-a"), timeout=10)
    assert [h.id for h in scheduler.ListHosts(empty_pb2.Empty(), timeout=10).hosts] == ["10.0.0.7-seed"]


def test_unknown_hosts_tasks_and_peers_are_not_found(scheduler):
    calls = [
        lambda: scheduler.DeleteHost(scheduler_pb2.DeleteHostRequest(host_id="nobody"), timeout=10),
        lambda: scheduler.StatTask(scheduler_pb2.StatTaskRequest(task_id="t" * 64), timeout=10),
        lambda: scheduler.StatPeer(scheduler_pb2.StatPeerRequest(peer_id="p"), timeout=10),
        lambda: scheduler.DeletePeer(scheduler_pb2.DeletePeerRequest(peer_id="p"), timeout=10),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert caught.value.details()


def peer_host(host_id: str, ip: str, port: int, download_port: int, seed: bool = False) -> common_pb2.Host:
    return common_pb2.Host(
        id=host_id, type=1 if seed else 0, hostname=host_id, ip=ip, port=port, download_port=download_port
    )


def download(**extra: object) -> common_pb2.Download:
    return common_pb2.Download(
        url=URL, piece_length=PIECE, actual_content_length=LENGTH, actual_piece_length=PIECE,
        actual_piece_count=LENGTH // PIECE, **extra,
    )  # fmt: skip


def piece(number: int, parent: str | None = None) -> common_pb2.Piece:
    return common_pb2.Piece(
        number=number, parent_id=parent, offset=number * PIECE, length=PIECE, digest="crc32c:0",
        cost=duration_pb2.Duration(nanos=50_000_000),
    )  # fmt: skip


class PeerStream:
    """One peer's AnnouncePeer stream, driven by hand."""

    def __init__(self, stub: scheduler_pb2_grpc.SchedulerStub, host_id: str, task_id: str, peer_id: str):
        self.ids = {"host_id": host_id, "task_id": task_id, "peer_id": peer_id}
        self.call = stub.AnnouncePeer()

    async def send(self, kind: str, **fields: object) -> None:
        body = GetMessageClass(scheduler_pb2.AnnouncePeerRequest.DESCRIPTOR.fields_by_name[kind].message_type)
        message = scheduler_pb2.AnnouncePeerRequest(**self.ids, **{kind: body(**fields)})
        with anyio.fail_after(ANSWER_TIMEOUT):
            await self.call.write(message)

    async def answer(self) -> scheduler_pb2.AnnouncePeerResponse:
        with anyio.fail_after(ANSWER_TIMEOUT):
            return await self.call.read()

    async def register(self, **extra: object) -> scheduler_pb2.AnnouncePeerResponse:
        await self.send("register_peer_request", download=download(**extra))
        return await self.answer()

    async def finish(self, back_to_source: bool, parent: str | None = None) -> grpc.StatusCode:
        """Download both pieces, say so, close the stream; the status the scheduler ended it with."""
        via = "_back_to_source" if back_to_source else ""
        await self.send(f"download_peer{via}_started_request")
        for number in range(LENGTH // PIECE):
            await self.send(f"download_piece{via}_finished_request", piece=piece(number, parent))
        await self.send(f"download_peer{via}_finished_request")
        return await self.end()

    async def end(self) -> grpc.StatusCode:
        with anyio.fail_after(ANSWER_TIMEOUT):
            await self.call.done_writing()
            return await self.call.code()


def parents_of(answer: scheduler_pb2.AnnouncePeerResponse) -> dict[str, common_pb2.Host]:
    assert answer.WhichOneof("response") == "normal_task_response", answer
    return {p.id: p.host for p in answer.normal_task_response.candidate_parents}


async def announce(stub: scheduler_pb2_grpc.SchedulerStub, *hosts: common_pb2.Host) -> None:
    for one in hosts:
        await stub.AnnounceHost(scheduler_pb2.AnnounceHostRequest(host=one), timeout=10)


async def peer_state(stub: scheduler_pb2_grpc.SchedulerStub, peer_id: str) -> str:
    return (await stub.StatPeer(scheduler_pb2.StatPeerRequest(peer_id=peer_id), timeout=10)).state


@pytest.mark.anyio
async def test_peers_are_sent_to_the_origin_then_to_each_other_and_reschedule_blocklists(scheduler_address):
    task = "a" * 64
    async with grpc.aio.insecure_channel(scheduler_address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        await announce(
            stub,
            peer_host("h-a", "10.1.0.1", 4100, 4105),
            peer_host("h-b", "10.1.0.2", 4200, 4205),
            peer_host("h-c", "10.1.0.3", 4300, 4305),
        )
        first = PeerStream(stub, "h-a", task, "p-a")
        answer = await first.register()
        assert answer.WhichOneof("response") == "need_back_to_source_response"  # no holder, no seed
        assert await first.finish(back_to_source=True) == grpc.StatusCode.OK
        assert await peer_state(stub, "p-a") == "Succeeded"  # still a holder after its stream closed

        second = PeerStream(stub, "h-b", task, "p-b")
        hosts = parents_of(await second.register())
        assert list(hosts) == ["p-a"]
        assert (hosts["p-a"].ip, hosts["p-a"].port, hosts["p-a"].download_port) == ("10.1.0.1", 4100, 4105)
        await second.send("download_peer_started_request")
        await second.send("download_piece_finished_request", piece=piece(0, "p-a"))

        third = PeerStream(stub, "h-c", task, "p-c")
        assert set(parents_of(await third.register())) == {"p-a", "p-b"}
        await third.send("download_peer_started_request")
        await third.send("reschedule_peer_request", candidate_parents=[common_pb2.Peer(id="p-a")])
        hosts = parents_of(await third.answer())
        assert list(hosts) == ["p-b"] and hosts["p-b"].download_port == 4205
        await third.send("reschedule_peer_request", candidate_parents=[common_pb2.Peer(id="p-b")])
        answer = await third.answer()
        assert answer.WhichOneof("response") == "need_back_to_source_response"

        second.call.cancel()  # the stream breaks while p-b is running
        for _ in range(200):  # the scheduler hears of the break asynchronously
            if await peer_state(stub, "p-b") != "Running":
                break
            await anyio.sleep(0.05)
        assert await peer_state(stub, "p-b") == "Failed"
        assert await third.finish(back_to_source=True) == grpc.StatusCode.OK
        stat = await stub.StatTask(scheduler_pb2.StatTaskRequest(task_id=task), timeout=10)
        assert (stat.content_length, stat.has_available_peer) == (LENGTH, True)


@pytest.mark.anyio
async def test_out_of_order_messages_and_unknown_hosts_end_the_stream_naming_the_peer(scheduler_address):
    async with grpc.aio.insecure_channel(scheduler_address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        await announce(stub, peer_host("h-a", "10.1.0.1", 4100, 4105))
        early = PeerStream(stub, "h-a", "b" * 64, "p-early")
        await early.send("download_piece_finished_request", piece=piece(0, "p-x"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await early.answer()
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "p-early" in caught.value.details()

        late = PeerStream(stub, "h-a", "b" * 64, "p-late")
        assert (await late.register(need_back_to_source=True)).HasField("need_back_to_source_response")
        await late.send("download_piece_finished_request", piece=piece(0, "p-x"))  # before it started
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await late.answer()
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "p-late" in caught.value.details()
        assert await peer_state(stub, "p-late") == "Failed"

        stranger = PeerStream(stub, "h-unknown", "b" * 64, "p-stranger")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stranger.register()
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "h-unknown" in caught.value.details()


class FakeSeed(dfdaemon_pb2_grpc.DfdaemonUploadServicer):
    """A seed host's upload service: records DownloadTask, then registers on the scheduler as a
    seed peer would, goes back to source and finishes."""

    def __init__(self, scheduler: scheduler_pb2_grpc.SchedulerStub, task_id: str) -> None:
        self.scheduler = scheduler
        self.task_id = task_id
        self.requests: list[dfdaemon_pb2.DownloadTaskRequest] = []
        self.answers: list[str] = []

    async def DownloadTask(self, request, context):
        self.requests.append(request)
        yield dfdaemon_pb2.DownloadTaskResponse(
            host_id="seed-host", task_id=self.task_id, peer_id="seed-peer",
            download_task_started_response=dfdaemon_pb2.DownloadTaskStartedResponse(content_length=LENGTH),
        )  # fmt: skip
        await anyio.sleep(0.7)  # a slow origin: peers register meanwhile
        stream = PeerStream(self.scheduler, "seed-host", self.task_id, "seed-peer")
        await stream.send("register_peer_request", download=request.download)
        self.answers.append((await stream.answer()).WhichOneof("response"))
        await stream.finish(back_to_source=True)


@pytest.mark.anyio
async def test_a_task_nobody_holds_triggers_the_seed_once_and_the_seed_becomes_the_parent(scheduler_address):
    task = "c" * 64
    async with grpc.aio.insecure_channel(scheduler_address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        seed = FakeSeed(stub, task)
        server = grpc.aio.server()
        dfdaemon_pb2_grpc.add_DfdaemonUploadServicer_to_server(seed, server)
        seed_port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            await announce(
                stub,
                peer_host("seed-host", "127.0.0.1", seed_port, 4005, seed=True),
                peer_host("h-a", "10.1.0.1", 4100, 4105),
                peer_host("h-b", "10.1.0.2", 4200, 4205),
            )
            first = PeerStream(stub, "h-a", task, "p-a")
            second = PeerStream(stub, "h-b", task, "p-b")
            answers = {}

            async def register(stream: PeerStream, name: str) -> None:
                answers[name] = await stream.register(
                    output_path="/tmp/out", range=common_pb2.Range(length=9)
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(register, first, "first")
                await anyio.sleep(0.2)
                tg.start_soon(register, second, "second")
            for answer in answers.values():
                hosts = parents_of(answer)
                assert "seed-peer" in hosts
                assert (hosts["seed-peer"].ip, hosts["seed-peer"].port) == ("127.0.0.1", seed_port)
            assert len(seed.requests) == 1
            asked = seed.requests[0].download
            assert asked.need_back_to_source and asked.url == URL
            assert not asked.HasField("output_path") and not asked.HasField("range")
            assert seed.answers == ["need_back_to_source_response"]
            assert await first.finish(back_to_source=False, parent="seed-peer") == grpc.StatusCode.OK
            assert await second.finish(back_to_source=False, parent="seed-peer") == grpc.StatusCode.OK
        finally:
            await server.stop(None)


@pytest.mark.anyio
async def test_an_unreachable_seed_lets_the_waiting_peer_go_back_to_source_without_the_long_wait(
    scheduler_address,
):
    async with grpc.aio.insecure_channel(scheduler_address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        await announce(
            stub,
            peer_host("seed-host", "127.0.0.1", free_port(), 4005, seed=True),  # nothing listens there
            peer_host("h-a", "10.1.0.1", 4100, 4105),
        )
        started = anyio.current_time()
        answer = await PeerStream(stub, "h-a", "d" * 64, "p-a").register()
        assert answer.WhichOneof("response") == "need_back_to_source_response"
        assert anyio.current_time() - started < 5.0  # not the ~10 s kept for a seed on its way
