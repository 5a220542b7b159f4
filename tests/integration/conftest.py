"""Integration fixtures: the cached Debian bookworm rootfs (debootstrap minbase), made once per machine."""

from pathlib import Path

import pytest
from fixtures.rootfs import ROOTFS_CACHE
from fixtures.rootfs import debian_rootfs as make_debian_rootfs


@pytest.fixture(scope="session")
def debian_rootfs() -> Path:
    """A bookworm minbase rootfs, debootstrapped on first use and kept under ROOTFS_CACHE."""
    return make_debian_rootfs(ROOTFS_CACHE)
