"""`lazyfly up`: the node's daemons started, restarted when they die, and stopped on SIGTERM."""

import signal
import subprocess
import time

import grpc
import pytest
import yaml
from dragonfly_api import scheduler_pb2_grpc
from fixtures.snapshotter import SnapshotsClient
from google.protobuf import empty_pb2
from integration.cli import LAZYFLY

from lazyfly.local_containerd import detach_mounts_under, processes_with_argument
from lazyfly.local_registry import free_port

pytestmark = pytest.mark.integration
START_TIMEOUT = 60.0


def wait_for(predicate, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.1)


def test_up_runs_the_p2p_daemons_and_the_snapshotter_restarts_it_and_stops_on_sigterm(tmp_path):
    state, run = tmp_path / "state", tmp_path / "run"
    scheduler = f"127.0.0.1:{free_port()}"
    config = tmp_path / "node.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "hostname": "testnode",
                "scheduler": scheduler,
                "peer_ports": [free_port() for _ in range(4)],
                "seed_ports": [free_port() for _ in range(4)],
            }
        )
    )
    argv = [str(LAZYFLY), "up", "--config", str(config), "--state-dir", str(state), "--run-dir", str(run)]
    node = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    socket = run / "snapshotter.sock"
    try:
        wait_for(socket.is_socket, "the snapshotter socket appears")
        wait_for(
            lambda: hosts(scheduler) == {"127.0.0.1-testnode", "127.0.0.1-testnode-seed"},
            "both peers announced",
        )
        assert (run / "peer.sock").is_socket() and (run / "seed-peer.sock").is_socket()
        client = SnapshotsClient(socket, "lazyfly")
        client.prepare("k")
        (first,) = processes_with_argument(str(socket))
        subprocess.run(["kill", "-9", str(first)], check=True)
        wait_for(lambda: processes_with_argument(str(socket)) not in ([], [first]), "a new snapshotter runs")
        wait_for(lambda: client_answers(client), "the new snapshotter answers")
        assert client.stat("k").name == "k"
        client.close()
        node.send_signal(signal.SIGTERM)
        out, _ = node.communicate(timeout=30)
        assert node.returncode == 0, out
        assert f'address = "{socket}"' in out
        assert processes_with_argument(str(socket)) == []
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        children = [socket, run / "peer.sock", run / "seed-peer.sock", state / "snapshotter" / "fusefs.sock"]
        for argument in [scheduler, *map(str, children)]:  # a node killed by the test leaves them
            for pid in processes_with_argument(argument):
                subprocess.run(["kill", "-9", str(pid)])
        detach_mounts_under(state)


def hosts(scheduler: str) -> set[str]:
    with grpc.insecure_channel(scheduler) as channel:
        try:
            answer = scheduler_pb2_grpc.SchedulerStub(channel).ListHosts(empty_pb2.Empty(), timeout=5)
        except grpc.RpcError:
            return set()
    return {host.id for host in answer.hosts}


def client_answers(client: SnapshotsClient) -> bool:
    try:
        client.list()
        return True
    except Exception:
        return False
