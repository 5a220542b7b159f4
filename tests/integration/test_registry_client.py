"""The registry client, auth, layouts and transfers against a real docker-registry (and skopeo)."""

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import anyio
import pytest
from fixtures.registry import (
    BearerAuthProxy,
    RunningRegistry,
    basic_auth_entry,
    bcrypt_available,
    start_registry,
    write_docker_config,
)

from lazyfly.errors import NotFound, Unavailable
from lazyfly.oci.auth import AuthenticationFailed, Credentials, RegistryAuth
from lazyfly.oci.layout import OciLayout
from lazyfly.oci.manifest import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    encode,
    parse_manifest,
    sha256_digest,
)
from lazyfly.oci.reference import OciLayoutRef, RegistryRef
from lazyfly.oci.registry import RegistryClient
from lazyfly.oci.transfer import pull_image, push_image

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
CALL_TIMEOUT = 30  # generous bound: a hang fails the test instead of stalling the suite


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # fusefs runs on trio; the round-trip test below also runs on asyncio


@pytest.fixture(autouse=True)
def empty_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never read the credentials of whoever runs the tests."""
    directory = tmp_path / "docker-config"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory


class CountingProgress:
    def __init__(self) -> None:
        self.total = 0
        self.done = 0

    def add_total(self, n: int) -> None:
        self.total += n

    def advance(self, n: int) -> None:
        self.done += n


def layer_bytes(payload: bytes) -> tuple[bytes, bytes]:
    """Return (gzip-compressed tar, uncompressed tar) holding one file with `payload`."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime, info.mode = len(payload), 1_700_000_000, 0o644
        tar.addfile(info, io.BytesIO(payload))
    return gzip.compress(raw.getvalue(), mtime=0), raw.getvalue()


def build_image(layout: OciLayout, payload: bytes, arch: str = "amd64", tag: str | None = None) -> Descriptor:
    compressed, raw = layer_bytes(payload)
    layer = layout.write_blob(compressed, OCI_LAYER_GZIP)
    config = {
        "architecture": arch,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(raw)]},
        "config": {"Cmd": ["/bin/sh"]},
    }
    config_desc = layout.write_blob(json.dumps(config).encode(), OCI_CONFIG)
    manifest = layout.write_blob(encode(Manifest(OCI_MANIFEST, config_desc, [layer])), OCI_MANIFEST)
    return layout.tag(manifest, tag) if tag else manifest


@pytest.fixture
def image(tmp_path: Path) -> OciLayout:
    layout = OciLayout(tmp_path / "src").create()
    build_image(layout, b"hello from lazyfly\n" * 5000, tag="v1")
    return layout


def blob_files(layout: OciLayout) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (layout.path / "blobs" / "sha256").iterdir()}


@pytest.mark.parametrize("anyio_backend", ["trio", "asyncio"])
async def test_push_then_pull_is_byte_identical(
    registry: RunningRegistry, image: OciLayout, tmp_path: Path
) -> None:
    ref = RegistryRef(registry.host, "lazyfly/hello", "v1")
    sent = CountingProgress()
    with anyio.fail_after(CALL_TIMEOUT):
        digest = await push_image(image, "v1", ref, plain_http=True, progress=sent)
        assert digest == image.resolve("v1").digest
        assert sent.done == sent.total > 0
        again = CountingProgress()
        assert await push_image(image, "v1", ref, plain_http=True, progress=again) == digest  # blobs skipped
        assert again.done == again.total
        dest = OciLayout(tmp_path / "pulled").create()
        received = CountingProgress()
        pulled = await pull_image(ref, dest, plain_http=True, progress=received)
    assert pulled.digest == digest and dest.resolve("v1").digest == digest
    assert blob_files(dest) == blob_files(image)
    assert received.done == received.total == sum(len(b) for b in blob_files(image).values()) - pulled.size


async def test_pull_by_digest_records_an_untagged_manifest(
    registry: RunningRegistry, image: OciLayout, tmp_path: Path
) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        digest = await push_image(
            image, "v1", RegistryRef(registry.host, "lazyfly/hello", "v1"), plain_http=True
        )
        dest = OciLayout(tmp_path / "pulled").create()
        await pull_image(RegistryRef(registry.host, "lazyfly/hello", digest=digest), dest, plain_http=True)
    assert dest.resolve(None).digest == digest and dest.tags() == []


async def test_manifest_list_platform_selection(registry: RunningRegistry, tmp_path: Path) -> None:
    layout = OciLayout(tmp_path / "multi").create()
    entries = []
    for arch in ("amd64", "arm64"):
        manifest = build_image(layout, f"I am {arch}\n".encode(), arch)
        entries.append(
            Descriptor(
                OCI_MANIFEST, manifest.digest, manifest.size, platform={"os": "linux", "architecture": arch}
            )
        )
    layout.tag(layout.write_blob(encode(Index(entries)), OCI_INDEX), "multi")
    ref = RegistryRef(registry.host, "lazyfly/multi", "multi")
    with anyio.fail_after(CALL_TIMEOUT):
        await push_image(layout, "multi", ref, plain_http=True)
        async with RegistryClient(registry.host, plain_http=True) as client:
            data, media_type, _ = await client.get_manifest(ref.repository, "multi")
        assert media_type == OCI_INDEX and isinstance(parse_manifest(data, media_type), Index)
        dest = OciLayout(tmp_path / "arm").create()
        pulled = await pull_image(ref, dest, platform="linux/arm64", plain_http=True)
        assert pulled.digest == entries[1].digest
        manifest, _, _ = dest.read_manifest("multi")
        with tarfile.open(fileobj=io.BytesIO(dest.read_blob(manifest.layers[0].digest))) as tar:
            assert tar.extractfile("hello.txt").read() == b"I am arm64\n"
        with pytest.raises(NotFound, match=r"linux/s390x.*linux/amd64, linux/arm64"):
            await pull_image(
                ref, OciLayout(tmp_path / "none").create(), platform="linux/s390x", plain_http=True
            )


async def test_missing_things_are_not_found_naming_them(registry: RunningRegistry) -> None:
    missing = "sha256:" + "0" * 64
    with anyio.fail_after(CALL_TIMEOUT):
        async with RegistryClient(registry.host, plain_http=True) as client:
            assert await client.head_blob("lazyfly/none", missing) is None
            assert await client.head_manifest("lazyfly/none", "v1") is None
            with pytest.raises(NotFound) as info:
                await client.get_blob("lazyfly/none", missing)
            assert (
                missing in str(info.value)
                and "lazyfly/none" in str(info.value)
                and registry.host in str(info.value)
            )
            with pytest.raises(NotFound, match="manifest lazyfly/none:v1"):
                await client.get_manifest("lazyfly/none", "v1")


async def test_stopped_registry_is_unavailable_without_hanging(registry: RunningRegistry) -> None:
    registry.stop()
    with anyio.fail_after(CALL_TIMEOUT):
        async with RegistryClient(registry.host, plain_http=True) as client:
            with pytest.raises(Unavailable, match=f"registry {registry.host} did not answer.*4 tries"):
                await client.get_manifest("lazyfly/hello", "v1")


async def test_blob_reads_range_and_download(
    registry: RunningRegistry, image: OciLayout, tmp_path: Path
) -> None:
    manifest, _, _ = image.read_manifest("v1")
    layer = manifest.layers[0]
    expected = image.read_blob(layer.digest)
    with anyio.fail_after(CALL_TIMEOUT):
        await push_image(image, "v1", RegistryRef(registry.host, "lazyfly/hello", "v1"), plain_http=True)
        async with RegistryClient(registry.host, plain_http=True) as client:
            assert await client.head_blob("lazyfly/hello", layer.digest) == layer.size
            assert await client.get_blob("lazyfly/hello", layer.digest) == expected
            assert await client.get_blob_range("lazyfly/hello", layer.digest, 3, 10) == expected[3:13]
            tail = await client.get_blob_range("lazyfly/hello", layer.digest, layer.size - 5, 5)
            assert tail == expected[-5:]
            dest = tmp_path / "out" / "layer.tar.gz"
            dest.parent.mkdir()
            seen: list[int] = []
            await client.download_blob("lazyfly/hello", layer.digest, dest, seen.append)
            assert dest.read_bytes() == expected and sum(seen) == layer.size
            with pytest.raises(NotFound):
                await client.download_blob("lazyfly/hello", "sha256:" + "1" * 64, tmp_path / "out" / "x")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["layer.tar.gz"]


async def test_bearer_flow_with_docker_config_credentials(
    registry: RunningRegistry, image: OciLayout, tmp_path: Path, empty_docker_config: Path
) -> None:
    with BearerAuthProxy(registry.host) as proxy, anyio.fail_after(CALL_TIMEOUT):
        write_docker_config(
            empty_docker_config, f"http://{proxy.host}", **basic_auth_entry("alice", "s3cret")
        )
        ref = RegistryRef(proxy.host, "lazyfly/private", "v1")
        digest = await push_image(image, "v1", ref, plain_http=True)
        dest = OciLayout(tmp_path / "pulled").create()
        assert (await pull_image(ref, dest, plain_http=True)).digest == digest
        assert blob_files(dest) == blob_files(image)
        assert proxy.token_requests >= 2  # a pull token, then a pull,push token for the upload


async def test_bearer_flow_with_identity_token(
    registry: RunningRegistry, image: OciLayout, empty_docker_config: Path
) -> None:
    with BearerAuthProxy(registry.host) as proxy, anyio.fail_after(CALL_TIMEOUT):
        write_docker_config(empty_docker_config, proxy.host, identitytoken="refresh-me")
        await push_image(image, "v1", RegistryRef(proxy.host, "lazyfly/private", "v1"), plain_http=True)


async def test_wrong_password_is_authentication_failed(registry: RunningRegistry) -> None:
    with BearerAuthProxy(registry.host) as proxy, anyio.fail_after(CALL_TIMEOUT):
        auth = RegistryAuth(proxy.host, Credentials("alice", "wrong"))
        async with RegistryClient(proxy.host, plain_http=True, auth=auth) as client:
            with pytest.raises(AuthenticationFailed) as info:
                await client.get_manifest("lazyfly/private", "v1")
    message = str(info.value)
    assert proxy.host in message and "lazyfly/private" in message and "alice" in message


async def test_token_is_refreshed_before_it_expires(registry: RunningRegistry, image: OciLayout) -> None:
    with BearerAuthProxy(registry.host, expires_in=2) as proxy, anyio.fail_after(CALL_TIMEOUT):
        auth = RegistryAuth(proxy.host, Credentials("alice", "s3cret"))
        async with RegistryClient(proxy.host, plain_http=True, auth=auth) as client:
            assert await client.head_manifest("lazyfly/private", "v1") is None
            first_tokens, first_challenges = proxy.token_requests, proxy.challenges
            assert (first_tokens, first_challenges) == (1, 1)
            assert await client.head_manifest("lazyfly/private", "v1") is None  # cached token, no 401
            assert (proxy.token_requests, proxy.challenges) == (1, 1)
            await anyio.sleep(2.2)
            assert await client.head_manifest("lazyfly/private", "v1") is None
            assert (proxy.token_requests, proxy.challenges) == (2, 1)  # refreshed up front, no 401


async def test_htpasswd_basic_auth(image: OciLayout, tmp_path: Path) -> None:
    if not bcrypt_available():
        pytest.skip("no bcrypt: add the `bcrypt` dev dependency (or apache2-utils) to test htpasswd auth")
    running = start_registry(tmp_path, users={"bob": "hunter2"})
    try:
        with anyio.fail_after(CALL_TIMEOUT):
            auth = RegistryAuth(running.host, Credentials("bob", "hunter2"))
            async with RegistryClient(running.host, plain_http=True, auth=auth) as client:
                assert await client.head_manifest("lazyfly/basic", "v1") is None
            for creds in (Credentials("bob", "nope"), None):
                async with RegistryClient(
                    running.host, plain_http=True, auth=RegistryAuth(running.host, creds)
                ) as client:
                    with pytest.raises(AuthenticationFailed, match=f"{running.host}.*lazyfly/basic"):
                        await client.head_manifest("lazyfly/basic", "v1")
    finally:
        running.stop()


def _policy(tmp_path: Path) -> Path:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    return policy


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
async def test_skopeo_reads_our_layout_and_copies_it_to_the_registry(
    registry: RunningRegistry, image: OciLayout, tmp_path: Path
) -> None:
    digest = image.resolve("v1").digest
    policy = _policy(tmp_path)
    with anyio.fail_after(CALL_TIMEOUT * 2):
        inspected = await anyio.run_process(
            ["skopeo", "--policy", str(policy), "inspect", f"oci:{image.path}:v1"]
        )
        assert json.loads(inspected.stdout)["Digest"] == digest
        target = f"docker://{registry.host}/lazyfly/skopeo:v1"
        await anyio.run_process(
            [
                "skopeo",
                "--policy",
                str(policy),
                "copy",
                "--dest-tls-verify=false",
                f"oci:{image.path}:v1",
                target,
            ]
        )
        dest = OciLayout(tmp_path / "back").create()
        pulled = await pull_image(RegistryRef(registry.host, "lazyfly/skopeo", "v1"), dest, plain_http=True)
        again = OciLayout(tmp_path / "layout-copy").create()
        await pull_image(OciLayoutRef(dest.path, "v1"), again)
    manifest, _, _ = dest.read_manifest("v1")
    assert [b.digest for b in manifest.layers] == [b.digest for b in image.read_manifest("v1")[0].layers]
    assert again.resolve("v1").digest == pulled.digest
    assert blob_files(again) == blob_files(dest)


@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed")
async def test_umoci_lists_and_stats_our_layout(image: OciLayout) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        listed = await anyio.run_process(["umoci", "ls", "--layout", str(image.path)])
        assert listed.stdout.split() == [b"v1"]
        stat = await anyio.run_process(["umoci", "stat", "--json", "--image", f"{image.path}:v1"])
    assert "history" in json.loads(stat.stdout)  # umoci parsed our manifest and config
