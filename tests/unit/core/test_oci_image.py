"""Tests of lazyfly.format.oci_image: the bootstrap layer's tar, its diff_id, and reading it back."""

import gzip
import hashlib
import io
import tarfile

import pytest

from lazyfly.errors import RemoteProtocolError
from lazyfly.format.oci_image import (
    BOOTSTRAP_PATH,
    bootstrap_layer,
    read_bootstrap_layer,
)

BOOT = bytes(range(256)) * 40 + b"tail"


def _tar(members: list[tuple[str, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_bootstrap_layer_is_byte_for_byte_reproducible() -> None:
    assert bootstrap_layer(BOOT) == bootstrap_layer(BOOT)


def test_bootstrap_layer_gzip_header_has_no_timestamp() -> None:
    layer, _ = bootstrap_layer(BOOT)
    assert layer[:3] == b"\x1f\x8b\x08" and layer[4:8] == b"\0\0\0\0"


def test_diff_id_is_the_sha256_of_the_gunzipped_tar() -> None:
    layer, diff_id = bootstrap_layer(BOOT)
    assert diff_id == "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    assert diff_id != "sha256:" + hashlib.sha256(layer).hexdigest()


def test_bootstrap_layer_tar_holds_image_dir_and_boot_file_with_fixed_attributes() -> None:
    layer, _ = bootstrap_layer(BOOT)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer)), mode="r:") as tar:
        members = tar.getmembers()
        assert [(m.name, m.type, m.mode) for m in members] == [
            ("image", tarfile.DIRTYPE, 0o755),
            (BOOTSTRAP_PATH, tarfile.REGTYPE, 0o644),
        ]
        assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members)
    assert BOOTSTRAP_PATH == "image/image.boot"


@pytest.mark.parametrize("boot", [BOOT, b"", b"\0" * 70_000])
def test_read_bootstrap_layer_round_trips(boot: bytes) -> None:
    layer, _ = bootstrap_layer(boot)
    assert read_bootstrap_layer(layer) == boot


def test_read_bootstrap_layer_accepts_a_plain_tar() -> None:
    assert read_bootstrap_layer(_tar([("image", None), (BOOTSTRAP_PATH, BOOT)])) == BOOT


def test_layer_without_image_boot_is_rejected() -> None:
    layer = gzip.compress(_tar([("image", None), ("image/other.boot", BOOT)]))
    with pytest.raises(RemoteProtocolError, match=r"holds no image/image\.boot"):
        read_bootstrap_layer(layer)


def test_layer_where_image_boot_is_a_directory_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError, match="not a file"):
        read_bootstrap_layer(_tar([(BOOTSTRAP_PATH, None)]))


@pytest.mark.parametrize("cut", [2, 10, 50, -8, -1])
def test_truncated_gzip_is_rejected(cut: int) -> None:
    layer, _ = bootstrap_layer(BOOT)
    with pytest.raises(RemoteProtocolError, match="damaged"):
        read_bootstrap_layer(layer[:cut])


def test_gzip_with_a_damaged_crc_is_rejected() -> None:
    layer, _ = bootstrap_layer(BOOT)
    damaged = bytearray(layer)
    damaged[-8] ^= 0xFF  # the CRC32 of the trailer
    with pytest.raises(RemoteProtocolError, match="damaged"):
        read_bootstrap_layer(bytes(damaged))


def test_gzip_with_a_damaged_deflate_stream_is_rejected() -> None:
    layer, _ = bootstrap_layer(BOOT)
    damaged = bytearray(layer)
    damaged[10] ^= 0xFF  # first byte of the deflate data, right after the 10-byte gzip header
    with pytest.raises(RemoteProtocolError, match="damaged"):
        read_bootstrap_layer(bytes(damaged))


def test_garbage_that_is_not_a_tar_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        read_bootstrap_layer(b"not a tar archive" * 100)
