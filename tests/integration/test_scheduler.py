"""`lazyfly scheduler` over real gRPC on loopback, called with the dragonfly-api stubs."""

import signal
import subprocess

import grpc
import pytest
from dragonfly_api import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from google.protobuf import empty_pb2
from integration.cli import LAZYFLY

from lazyfly.local_registry import free_port

pytestmark = pytest.mark.integration
START_TIMEOUT = 30.0


@pytest.fixture
def scheduler():
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [str(LAZYFLY), "scheduler", "--listen", address], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
        yield scheduler_pb2_grpc.SchedulerStub(channel)
    finally:
        channel.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
