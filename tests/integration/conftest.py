"""Integration fixtures: the corner-case tree, the cached Debian bookworm rootfs (debootstrap
minbase, made once per machine), and lazyfly mounts that are always undone."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.mounts import Mounts
from fixtures.rootfs import ROOTFS_CACHE
from fixtures.rootfs import debian_rootfs as make_debian_rootfs
from fixtures.trees import make_corner_case_tree

CORNER_CHUNK = 64 << 10  # small chunks, so the tree's files cross many chunk boundaries


@pytest.fixture(scope="session")
def debian_rootfs() -> Path:
    """A bookworm minbase rootfs, debootstrapped on first use and kept under ROOTFS_CACHE."""
    return make_debian_rootfs(ROOTFS_CACHE)


@pytest.fixture(scope="session")
def corner_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated corner-case tree (sized for CORNER_CHUNK), shared by every test that reads it."""
    root = tmp_path_factory.mktemp("corner") / "tree"
    make_corner_case_tree(root, chunk_size=CORNER_CHUNK, large_file_size=8 << 20)
    return root


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Mounts]:
    made = Mounts(tmp_path)
    try:
        yield made
    finally:
        made.cleanup()
