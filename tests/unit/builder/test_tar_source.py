import gzip
import io
import tarfile
import zlib
from pathlib import Path

import pytest
import zstandard

from lazyfly.builder.content_sink import HashingSink
from lazyfly.builder.errors import BrokenLayer, UnsafeTarEntry
from lazyfly.builder.tar_source import read_tar_file, read_tar_stream
from lazyfly.builder.tree import find


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in attrs.items():
        setattr(info, k, v)
    return info


def _read(data: bytes, whiteouts: bool = True):
    return read_tar_stream(io.BytesIO(data), HashingSink(), whiteouts=whiteouts, name="test.tar")


def test_regular_files_dirs_links_and_devices_are_read():
    data = _tar(
        [
            (_entry("./", tarfile.DIRTYPE, mode=0o755), None),
            (_entry("./etc/passwd", mode=0o644, uid=100000, gid=200000), b"root:x:0:0\n"),
            (_entry("etc/link", tarfile.LNKTYPE, linkname="etc/passwd"), None),
            (_entry("sym", tarfile.SYMTYPE, linkname="/etc/passwd"), None),
            (_entry("null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666), None),
            (_entry("fifo", tarfile.FIFOTYPE), None),
        ]
    )
    root = _read(data)
    passwd = find(root, b"/etc/passwd")
    assert passwd.uid == 100000 and passwd.gid == 200000 and passwd.size == 11
    assert find(root, b"/etc/link") is passwd
    assert find(root, b"/sym").target == b"/etc/passwd"
    assert find(root, b"/null").rdev == (1 << 8) | 3
    assert find(root, b"/etc").is_dir  # implied by its child


def test_pax_xattrs_and_nanosecond_mtime_are_kept():
    info = _entry("f", mode=0o644)
    info.pax_headers = {"SCHILY.xattr.user.k": "v", "mtime": "1700000000.123456789"}
    node = find(_read(_tar([(info, b"x")])), b"/f")
    assert node.xattrs == {b"user.k": b"v"}
    assert node.mtime_ns == 1_700_000_000_123_456_789


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/etc/passwd"])
def test_entries_escaping_the_tree_are_refused(name):
    with pytest.raises(UnsafeTarEntry, match=r"test\.tar"):
        _read(_tar([(_entry(name), b"x")], fmt=tarfile.GNU_FORMAT))


def test_duplicate_entry_is_refused():
    with pytest.raises(UnsafeTarEntry, match="appears twice"):
        _read(_tar([(_entry("a"), b"1"), (_entry("./a"), b"2")]))


def test_hard_link_to_missing_target_is_refused():
    with pytest.raises(UnsafeTarEntry, match="missing entry"):
        _read(_tar([(_entry("a", tarfile.LNKTYPE, linkname="nowhere"), None)]))


def test_whiteouts_become_markers_only_for_image_layers():
    data = _tar([(_entry("d/.wh.gone"), b""), (_entry("d/.wh..wh..opq"), b"")])
    layer = _read(data, whiteouts=True)
    assert find(layer, b"/d").opaque and find(layer, b"/d/gone").is_whiteout
    plain = _read(data, whiteouts=False)
    assert find(plain, b"/d/.wh.gone") is not None


def test_gzip_and_zstd_layers_are_detected(tmp_path: Path):
    data = _tar([(_entry("f"), b"hello")])
    for name, packed in [("l.tgz", gzip.compress(data)), ("l.tzst", zstandard.compress(data))]:
        (tmp_path / name).write_bytes(packed)
        root = read_tar_file(tmp_path / name, HashingSink(), whiteouts=True)
        assert find(root, b"/f").size == 5


def test_broken_gzip_is_reported_as_broken_layer(tmp_path: Path):
    packed = bytearray(gzip.compress(_tar([(_entry("f"), bytes(range(256)) * 64)])))
    packed[len(packed) // 2] ^= 0xFF
    (tmp_path / "bad.tgz").write_bytes(bytes(packed))
    with pytest.raises(BrokenLayer, match=r"bad\.tgz"):
        read_tar_file(tmp_path / "bad.tgz", HashingSink(), whiteouts=False)


def test_truncated_tar_is_reported_as_broken_layer(tmp_path: Path):
    data = _tar([(_entry("f"), zlib.compress(b"x") * 5000)])
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 3])
    with pytest.raises(BrokenLayer):
        read_tar_file(tmp_path / "cut.tar", HashingSink(), whiteouts=False)
