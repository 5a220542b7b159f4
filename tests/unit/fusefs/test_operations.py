"""LazyOperations called directly, before anything is mounted (s3ql's way)."""

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pyfuse3
import pytest
import trio

from lazyfly.fusefs.config import ImageSettings
from lazyfly.fusefs.image_loader import load_image
from lazyfly.fusefs.namespace import ROOT_INODE, Namespace
from lazyfly.fusefs.operations import IMAGE_TIMEOUT, LazyOperations

LAZYFLY = Path(sys.executable).with_name("lazyfly")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "dir" / "file.txt").write_bytes(b"hello world\n" * 1000)
    (src / "big.bin").write_bytes(os.urandom(300_000))
    os.link(src / "big.bin", src / "dir" / "big-link")
    os.symlink("dir/file.txt", src / "link")
    os.setxattr(src / "dir" / "file.txt", "user.color", b"blue")
    out = tmp_path_factory.mktemp("img") / "layout"
    subprocess.run(
        [LAZYFLY, "build", src, "-o", out, "--chunk-size", "64KiB"], check=True, capture_output=True
    )
    return out


def _run(image_dir: Path, tmp_path: Path, single: bool, test) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        namespace = Namespace(single=single)
        image = await load_image(namespace, "img", image_dir, tmp_path / "cache", ImageSettings())
        namespace.add(image)
        try:
            await test(LazyOperations(namespace), image)
        finally:
            await image.aclose()

    trio.run(main)


def _fuse_errno(excinfo: pytest.ExceptionInfo[pyfuse3.FUSEError]) -> int:
    return excinfo.value.errno


def test_images_are_directories_of_the_mount_root(image_dir: Path, tmp_path: Path):
    async def test(ops: LazyOperations, image) -> None:  # type: ignore[no-untyped-def]
        root = await ops.getattr(ROOT_INODE)
        assert stat.S_ISDIR(root.st_mode) and root.st_nlink == 3
        attrs = await ops.lookup(ROOT_INODE, b"img")
        assert stat.S_ISDIR(attrs.st_mode) and attrs.st_ino != ROOT_INODE
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.lookup(ROOT_INODE, b"nothing")
        assert _fuse_errno(excinfo) == errno.ENOENT
        names = [name for _, name, _ in ops._listing(ROOT_INODE, 0)]
        assert names == [b".", b"..", b"img"]

    _run(image_dir, tmp_path, False, test)


def test_lookup_getattr_read_readlink_and_xattrs(image_dir: Path, tmp_path: Path):
    async def test(ops: LazyOperations, image) -> None:  # type: ignore[no-untyped-def]
        top = await ops.lookup(ROOT_INODE, b"dir")
        file = await ops.lookup(top.st_ino, b"file.txt")
        assert file.st_size == 12000 and stat.S_ISREG(file.st_mode)
        fh = (await ops.open(file.st_ino, os.O_RDONLY, None)).fh
        assert await ops.read(fh, 6, 5) == b"world"
        assert await ops.read(fh, 11990, 100) == b"llo world\n"
        assert await ops.read(fh, 12000, 10) == b""
        assert await ops.getxattr(file.st_ino, b"user.color", None) == b"blue"
        assert await ops.listxattr(file.st_ino, None) == [b"user.color"]
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.getxattr(file.st_ino, b"user.none", None)
        assert _fuse_errno(excinfo) == pyfuse3.ENOATTR
        link = await ops.lookup(ROOT_INODE, b"link")
        assert await ops.readlink(link.st_ino, None) == b"dir/file.txt"

    _run(image_dir, tmp_path, True, test)


def test_a_name_missing_from_an_image_is_a_negative_entry_the_kernel_keeps(image_dir: Path, tmp_path: Path):
    async def test(ops: LazyOperations, image) -> None:  # type: ignore[no-untyped-def]
        top = await ops.lookup(ROOT_INODE, b"dir")
        for parent in (ROOT_INODE, top.st_ino):
            absent = await ops.lookup(parent, b"libmissing.so.1")
            assert absent.st_ino == 0 and absent.entry_timeout == IMAGE_TIMEOUT

    _run(image_dir, tmp_path, True, test)


def test_hard_links_share_an_inode_number(image_dir: Path, tmp_path: Path):
    async def test(ops: LazyOperations, image) -> None:  # type: ignore[no-untyped-def]
        big = await ops.lookup(ROOT_INODE, b"big.bin")
        top = await ops.lookup(ROOT_INODE, b"dir")
        linked = await ops.lookup(top.st_ino, b"big-link")
        assert big.st_ino == linked.st_ino and big.st_nlink == 2

    _run(image_dir, tmp_path, True, test)


def test_readdir_lists_dots_and_resumes_where_it_stopped(image_dir: Path, tmp_path: Path):
    async def test(ops: LazyOperations, image) -> None:  # type: ignore[no-untyped-def]
        top = await ops.lookup(ROOT_INODE, b"dir")
        full = list(ops._listing(top.st_ino, 0))
        assert [name for _, name, _ in full] == [b".", b"..", b"big-link", b"file.txt", b"sub"]
        assert [next_id for next_id, _, _ in full] == [1, 2, 3, 4, 5]
        assert full[1][2].st_ino == ROOT_INODE  # .. of a top-level dir is the image root
        for start in range(len(full) + 1):
            resumed = [(next_id, name) for next_id, name, _ in ops._listing(top.st_ino, start)]
            assert resumed == [(next_id, name) for next_id, name, _ in full[start:]]

    _run(image_dir, tmp_path, True, test)


def test_writes_are_refused_and_directories_do_not_open(image_dir: Path, tmp_path: Path):
    async def test(ops: LazyOperations, image) -> None:  # type: ignore[no-untyped-def]
        big = await ops.lookup(ROOT_INODE, b"big.bin")
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.open(big.st_ino, os.O_RDWR, None)
        assert _fuse_errno(excinfo) == errno.EROFS
        top = await ops.lookup(ROOT_INODE, b"dir")
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.open(top.st_ino, os.O_RDONLY, None)
        assert _fuse_errno(excinfo) == errno.EISDIR

    _run(image_dir, tmp_path, True, test)


def test_statfs_reports_a_full_read_only_filesystem(image_dir: Path, tmp_path: Path):
    async def test(ops: LazyOperations, image) -> None:  # type: ignore[no-untyped-def]
        data = await ops.statfs(None)
        assert data.f_blocks > 0 and data.f_bfree == 0 and data.f_files == image.bootstrap.inode_count + 1

    _run(image_dir, tmp_path, True, test)


def test_inodes_of_a_removed_image_answer_enoent(image_dir: Path, tmp_path: Path):
    async def test(ops: LazyOperations, image) -> None:  # type: ignore[no-untyped-def]
        attrs = await ops.lookup(ROOT_INODE, b"img")
        ops.namespace.remove("img")
        with pytest.raises(pyfuse3.FUSEError) as excinfo:
            await ops.getattr(attrs.st_ino)
        assert _fuse_errno(excinfo) == errno.ENOENT

    _run(image_dir, tmp_path, False, test)
