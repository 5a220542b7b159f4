"""`lazyfly build` of the corner-case tree, as a directory and as a tarball, checked end to end."""

import itertools
import json
import os
import random
import subprocess
from pathlib import Path

import pytest
from fixtures.layouts import only_manifest
from integration.cli import lazyfly

from lazyfly.builder.image_source import as_lazy_image, open_local_image

pytestmark = pytest.mark.integration
CHUNK = 64 << 10  # the chunk size the corner_tree fixture is made for


@pytest.fixture(scope="module")
def built(corner_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("built") / "image"
    lazyfly("build", corner_tree, "-o", out, "--chunk-size", "64KiB", "--tag", "v1")
    return out


def test_directory_build_round_trips_through_check_source(built: Path, corner_tree: Path):
    proc = lazyfly("check", built, "--source", corner_tree)
    assert "check: OK" in proc.stdout


def test_inspect_counts_dedup_and_holes(built: Path):
    info = json.loads(lazyfly("inspect", built, "--json").stdout)
    assert info["chunks"]["deduplicated_references"] > 0
    assert info["chunks"]["hole_bytes"] > 0
    assert info["chunk_size"] == CHUNK
    assert {"files", "directories", "symlinks", "fifos", "char devices", "block devices"} <= set(
        info["kinds"]
    )


def test_skopeo_and_umoci_read_the_layout(built: Path):
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{built}:v1"], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout)["annotations"]["io.lazyfly.image"] == "1"
    subprocess.run(["umoci", "stat", "--image", f"{built}:v1"], capture_output=True, check=True)


def test_pax_tarball_build_round_trips(corner_tree: Path, tmp_path: Path):
    tarball = tmp_path / "tree.tar.gz"
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "--format=pax", "-C", corner_tree, "-czf", tarball, "."],
        check=True,
    )
    out = tmp_path / "image"
    lazyfly("build", tarball, "-o", out, "--chunk-size", "64KiB", "--compressor", "lz4")
    assert "check: OK" in lazyfly("check", out, "--source", tarball).stdout


@pytest.mark.parametrize("where", ["start", "middle", "table"])
def test_a_flipped_byte_in_a_blob_fails_check(built: Path, tmp_path: Path, where: str):
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", built, copy], check=True)
    manifest = only_manifest(copy)
    blob = copy / "blobs" / "sha256" / manifest["layers"][0]["digest"].removeprefix("sha256:")
    size = blob.stat().st_size
    offset = {"start": 0, "middle": size // 2, "table": size - 100}[where]
    _flip(blob, offset)
    proc = lazyfly("check", copy, check=False)
    assert proc.returncode != 0
    assert manifest["layers"][0]["digest"] in proc.stderr


def test_a_flipped_byte_in_the_bootstrap_fails_check(built: Path, tmp_path: Path):
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", built, copy], check=True)
    digest = only_manifest(copy)["layers"][-1]["digest"].removeprefix("sha256:")
    _flip(copy / "blobs" / "sha256" / digest, 40)
    proc = lazyfly("check", copy, check=False)
    assert proc.returncode != 0 and "error" in proc.stderr


def test_prefetch_list_is_recorded(corner_tree: Path, tmp_path: Path):
    listing = tmp_path / "prefetch.txt"
    listing.write_text("# hot files\n/sizes/chunk\n/large/big.bin\n")
    out = tmp_path / "image"
    lazyfly("build", corner_tree, "-o", out, "--prefetch-list", listing)
    info = json.loads(lazyfly("inspect", out, "--json").stdout)
    paths = {e["ino"]: e["path"] for e in info["tree"]}
    assert [paths[i] for i in info["prefetch"]] == ["/sizes/chunk", "/large/big.bin"]


@pytest.mark.parametrize("source", ["directory", "tarball"])
def test_prefetch_list_chunks_are_stored_together_in_a_flagged_blob_after_the_layers(
    tmp_path: Path, source: str
):
    rng = random.Random(7)
    src = tmp_path / "src"
    names = ["a/one", "a/two", "b/hot", "b/cold", "c/d/deep", "c/e", "z/mapped"]
    for name in names:
        size = 4 * CHUNK if name == "z/mapped" else rng.randrange(10 << 10, 200 << 10)
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(rng.randbytes(size))
    (src / "c" / "link").symlink_to("../a/one")
    (src / "z" / "copy-of-hot").write_bytes((src / "b" / "hot").read_bytes())  # unlisted, walked first
    listing = tmp_path / "prefetch.txt"
    # a directory, files (one spelt with //), and byte ranges in chunks 1 and 3 of /z/mapped
    listing.write_text(f"/c/\n/b/hot\n/a//two\n/z/mapped\t{CHUNK}:1000,{3 * CHUNK + 5}:10\n")
    given = src
    if source == "tarball":
        given = tmp_path / "src.tar"
        subprocess.run(["tar", "--format=pax", "-C", src, "-cf", given, "."], check=True)
    out = tmp_path / "image"
    lazyfly("build", given, "-o", out, "--chunk-size", "64KiB", "--prefetch-list", listing)
    with open_local_image(out) as local:
        boot = as_lazy_image(local).bootstrap
    assert [blob.prefetch for blob in boot.blobs()] == [False, True]  # the layer's, the prefetch blob
    placed = {"b/hot", "a/two", "c/d/deep", "c/e"}
    gathered = []
    for name in names:
        refs = boot.chunks(boot.inode(boot.resolve("/" + name)))
        if name == "z/mapped":
            assert [ref.blob_index for ref in refs] == [0, 1, 0, 1]
        else:
            assert {ref.blob_index for ref in refs} == ({1} if name in placed else {0}), name
        gathered += [ref for ref in refs if ref.blob_index == 1]
    spans = sorted((ref.compressed_offset, ref.compressed_size) for ref in gathered)
    back_to_back = itertools.accumulate([0] + [size for _, size in spans[:-1]])
    assert [offset for offset, _ in spans] == list(back_to_back)
    assert boot.blobs()[1].chunk_count == len(gathered)
    copy, hot = (boot.chunks(boot.inode(boot.resolve(path))) for path in ("/z/copy-of-hot", "/b/hot"))
    assert [ref.digest for ref in copy] == [ref.digest for ref in hot]
    if source == "directory":  # z/ is read before b/: the listed file's chunks are stored again
        assert {ref.blob_index for ref in copy} == {0}
    assert "check: OK" in lazyfly("check", out, "--source", src).stdout


def test_a_bad_range_in_the_prefetch_list_is_refused_with_its_line(tmp_path: Path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"x")
    listing = tmp_path / "prefetch.txt"
    listing.write_text("/f\t0:0\n")
    proc = lazyfly("build", tmp_path / "src", "-o", tmp_path / "out", "--prefetch-list", listing, check=False)
    assert proc.returncode != 0 and f"{listing}:1" in proc.stderr and "OFFSET:LENGTH" in proc.stderr


def test_chunk_dictionary_dedups_against_another_image(built: Path, corner_tree: Path, tmp_path: Path):
    out = tmp_path / "image"
    lazyfly("build", corner_tree / "sizes", "-o", out, "--chunk-size", "64KiB", "--chunk-dict", built)
    info = json.loads(lazyfly("inspect", out, "--json").stdout)
    assert len(info["blobs"]) == 2  # its own (empty) blob and the dictionary's
    assert info["blobs"][0]["chunks"] == 0
    assert "check: OK" in lazyfly("check", out, "--source", corner_tree / "sizes").stdout


def _flip(path: Path, offset: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        byte = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([byte[0] ^ 0xFF]), offset)
    finally:
        os.close(fd)
