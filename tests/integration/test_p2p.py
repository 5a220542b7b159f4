"""The piece layer end to end: a real scheduler, seed peer and peers on loopback, an origin that counts."""

import hashlib
import os
import time
from pathlib import Path

import anyio
import grpc
import httpx
import pytest
from dragonfly_api import dfdaemon_pb2, dfdaemon_pb2_grpc
from fixtures.origin import Origin
from fixtures.p2p_cluster import Cluster, kill
from fixtures.registry import BearerAuthProxy, basic_auth_entry, start_registry, write_docker_config

from lazyfly.oci.registry import RegistryClient
from lazyfly.p2p.download.request import DownloadRequest

pytestmark = pytest.mark.integration
MB = 1 << 20
GET_TIMEOUT = 300
REPO = "lazyfly/p2p"


def _blob(size: int) -> bytes:
    return os.urandom(size)


def _finish(processes: list, timeout: float = GET_TIMEOUT) -> None:
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        assert process.returncode == 0, f"lazyfly get failed:\n{out}\n{err}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stat_task(socket: Path, task_id: str):
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = dfdaemon_pb2_grpc.DfdaemonDownloadStub(channel)
        return stub.StatTask(dfdaemon_pb2.StatTaskRequest(task_id=task_id), timeout=10)


@pytest.fixture
def cluster(tmp_path: Path):
    with Cluster(tmp_path) as made:
        yield made


def test_a_seed_and_four_peers_fetch_one_blob_with_the_origin_serving_it_about_once(cluster, tmp_path):
    data = _blob(200 * MB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with Origin(data) as origin:
        cluster.start_scheduler()
        seed = cluster.start_peer("seed", seed=True)
        peers = [cluster.start_peer(f"peer{i}") for i in range(4)]
        outputs = [tmp_path / f"out{i}" for i in range(4)]
        _finish([p.get(origin.url, out, "--digest", digest) for p, out in zip(peers, outputs, strict=True)])
        for out in outputs:
            assert "sha256:" + _sha256(out) == digest
        assert origin.sent <= 1.1 * len(data), f"origin sent {origin.sent} bytes for a {len(data)}-byte blob"
        assert seed.metric("lazyfly_peer_piece_bytes_total", 'traffic_type="back_to_source"') >= len(data)
        from_peers = sum(
            p.metric("lazyfly_peer_piece_bytes_total", 'traffic_type="remote_peer"') for p in peers
        )
        assert from_peers >= 3.9 * len(data)
        assert cluster.problems() == []  # every scheduler conversation went through to its end


def test_a_parent_killed_mid_transfer_does_not_fail_its_child(cluster, tmp_path):
    data = _blob(48 * MB)
    with Origin(data) as origin:
        cluster.start_scheduler()
        parent = cluster.start_peer("parent", settings={"rates": {"upload": 8 * MB}})
        _finish([parent.get(origin.url, tmp_path / "parent-copy")])
        sent_before = origin.sent
        child = cluster.start_peer("child")
        getting = child.get(origin.url, tmp_path / "child-copy")
        deadline = time.monotonic() + 60
        while child.metric("lazyfly_peer_piece_bytes_total", 'traffic_type="remote_peer"') < 8 * MB:
            assert time.monotonic() < deadline, "the child got nothing from its parent"
            time.sleep(0.1)
        kill(parent)
        _finish([getting])
        assert (tmp_path / "child-copy").read_bytes() == data
        assert origin.sent - sent_before < len(data), "the child fetched more than the missing part again"


def test_a_lying_parent_is_blocklisted_and_its_piece_fetched_elsewhere(cluster, tmp_path):
    data = _blob(24 * MB)
    with Origin(data) as origin:
        cluster.start_scheduler()
        liar = cluster.start_peer("liar")
        _finish([liar.get(origin.url, tmp_path / "liar-copy")])
        content = next((liar.data_dir / "content" / "tasks").rglob("*"))
        while content.is_dir():
            content = next(content.iterdir())
        with content.open("r+b") as f:  # the liar's disk now holds a wrong byte in piece 1
            f.seek(4 * MB + 123)
            f.write(bytes([f.read(1)[0] ^ 0xFF]))
        child = cluster.start_peer("child")
        _finish([child.get(origin.url, tmp_path / "child-copy")])
        assert (tmp_path / "child-copy").read_bytes() == data
        assert child.metric("lazyfly_peer_piece_failures_total", 'traffic_type="remote_peer"') >= 1


def test_the_proxy_answers_a_range_with_prefetch_then_the_whole_task_completes(cluster):
    data = _blob(40 * MB)
    with Origin(data) as origin:
        cluster.start_scheduler()
        peer = cluster.start_peer("peer")
        headers = {
            "Range": "bytes=30000000-30000099",
            "X-Dragonfly-Use-P2P": "true",
            "X-Dragonfly-Prefetch": "true",
        }
        with httpx.Client(proxy=peer.proxy, trust_env=False, timeout=60) as client:
            answer = client.get(origin.url, headers=headers)
        assert answer.status_code == 206
        assert answer.headers["Content-Range"] == f"bytes 30000000-30000099/{len(data)}"
        assert answer.content == data[30000000:30000100]
        task_id = answer.headers["X-Dragonfly-Task-ID"]
        deadline = time.monotonic() + 60
        while (task := _stat_task(peer.socket, task_id)).state != "Succeeded":
            assert time.monotonic() < deadline, f"the prefetch did not finish: {task.state}"
            time.sleep(0.2)
        assert task.content_length == len(data)
        assert origin.sent <= 1.1 * len(data)


def test_a_range_without_prefetch_fetches_only_its_pieces(cluster):
    data = _blob(40 * MB)
    with Origin(data) as origin:
        peer = cluster.start_peer("peer", scheduler=None)
        headers = {"Range": "bytes=-100", "X-Dragonfly-Use-P2P": "true"}
        with httpx.Client(proxy=peer.proxy, trust_env=False, timeout=60) as client:
            answer = client.get(origin.url, headers=headers)
            assert answer.status_code == 206 and answer.content == data[-100:]
            bad = client.get(origin.url, headers={"Range": "bytes=99999999-", "X-Dragonfly-Use-P2P": "true"})
            assert bad.status_code == 416 and bad.headers["X-Dragonfly-Error-Type"] == "proxy"
        assert origin.sent <= 4 * MB, "more than the last piece came from the origin"


def test_a_dead_scheduler_makes_the_peer_download_from_the_origin(cluster, tmp_path):
    data = _blob(12 * MB)
    with Origin(data) as origin:
        peer = cluster.start_peer("lonely", scheduler="127.0.0.1:9")
        _finish([peer.get(origin.url, tmp_path / "copy")])
        assert (tmp_path / "copy").read_bytes() == data


def test_an_origin_that_lies_about_the_length_fails_the_download(cluster, tmp_path):
    with Origin(_blob(6 * MB)) as origin:
        origin.lie = "length"
        peer = cluster.start_peer("peer", scheduler=None)
        process = peer.get(origin.url, tmp_path / "copy")
        _, err = process.communicate(timeout=GET_TIMEOUT)
        assert process.returncode != 0 and "origin" in err
        assert not (tmp_path / "copy").exists()


def test_finished_tasks_survive_a_restart_and_are_served_from_disk(cluster, tmp_path):
    data = _blob(10 * MB)
    with Origin(data) as origin:
        peer = cluster.start_peer("peer", scheduler=None)
        _finish([peer.get(origin.url, tmp_path / "first")])
        sent = origin.sent
        peer.process.terminate()
        peer.process.wait(15)
        again = cluster.start_peer("peer", scheduler=None)
        _finish([again.get(origin.url, tmp_path / "second")])
        assert origin.sent == sent
        assert (tmp_path / "second").read_bytes() == data
        task_id = DownloadRequest(origin.url).task_id
        assert _stat_task(again.socket, task_id).state == "Succeeded"
        with grpc.insecure_channel(f"unix:{again.socket}") as channel:
            stub = dfdaemon_pb2_grpc.DfdaemonDownloadStub(channel)
            stub.DeleteTask(dfdaemon_pb2.DeleteTaskRequest(task_id=task_id), timeout=10)
        with pytest.raises(grpc.RpcError) as gone:
            _stat_task(again.socket, task_id)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_disk_gc_evicts_the_least_recently_used_task_over_the_quota(cluster, tmp_path):
    blobs = [_blob(8 * MB) for _ in range(3)]
    gc = {"interval": 0.5, "quota": 20 * MB, "high_percent": 80.0, "low_percent": 50.0}
    origins = [Origin(b) for b in blobs]
    try:
        for origin in origins:
            origin.__enter__()
        peer = cluster.start_peer("peer", scheduler=None, settings={"gc": gc})
        for i, origin in enumerate(origins):
            _finish([peer.get(origin.url, tmp_path / f"copy{i}")])
            time.sleep(1.5)
        deadline = time.monotonic() + 20
        while peer.metric("lazyfly_peer_stored_tasks") > 2:
            assert time.monotonic() < deadline, "nothing was evicted"
            time.sleep(0.2)
        sent = [o.sent for o in origins]
        _finish([peer.get(origins[2].url, tmp_path / "again")])
        assert origins[2].sent == sent[2], "the most recent task was evicted"
        assert peer.metric("lazyfly_peer_evicted_bytes_total") >= 8 * MB
    finally:
        for origin in origins:
            origin.stop()


def test_registry_blobs_behind_a_bearer_token_come_through_the_proxy(cluster, tmp_path):
    registry = start_registry(tmp_path / "registry")
    try:
        data = _blob(9 * MB)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        push_blob(registry.host, digest, data, tmp_path / "upload")
        with BearerAuthProxy(registry.host) as auth:
            config = tmp_path / "docker-config"
            config.mkdir()
            write_docker_config(config, auth.host, **basic_auth_entry("alice", "s3cret"))
            peer = cluster.start_peer("peer", scheduler=None, env={"DOCKER_CONFIG": str(config)})
            url = f"http://{auth.host}/v2/{REPO}/blobs/{digest}"
            with httpx.Client(proxy=peer.proxy, trust_env=False, timeout=60) as client:
                answer = client.get(url, headers={"Range": "bytes=5000000-5000999"})
                mirrored = httpx.get(
                    f"{peer.proxy}/v2/{REPO}/blobs/{digest}",
                    headers={"X-Dragonfly-Registry": f"http://{auth.host}", "Range": "bytes=0-99"},
                    timeout=60,
                )
            assert answer.status_code == 206 and answer.content == data[5000000:5001000]
            assert mirrored.status_code == 206 and mirrored.content == data[:100]
            assert auth.token_requests >= 1
    finally:
        registry.stop()


def push_blob(host: str, digest: str, data: bytes, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "blob"
    path.write_bytes(data)

    async def push() -> None:
        async with RegistryClient(host, plain_http=True) as client:
            await client.push_blob(REPO, digest, len(data), path)

    anyio.run(push)
