import random
from collections import Counter

import pytest

from lazyfly.errors import NotFound
from lazyfly.format.bootstrap_reader import Bootstrap
from lazyfly.format.layout import ChunkRef, Inode
from lazyfly.fusefs.metadata_cache import MetadataCache


class CountingBootstrap:
    """The calls MetadataCache makes, counted, answered by the real bootstrap."""

    def __init__(self, bootstrap: Bootstrap) -> None:
        self.bootstrap = bootstrap
        self.calls: Counter[str] = Counter()

    def inode(self, ino: int) -> Inode:
        self.calls["inode"] += 1
        return self.bootstrap.inode(ino)

    def chunks(self, inode: Inode) -> list[ChunkRef]:
        self.calls["chunks"] += 1
        return self.bootstrap.chunks(inode)

    def chunks_in_range(self, inode: Inode, offset: int, length: int) -> list[ChunkRef]:
        self.calls["chunks_in_range"] += 1
        return self.bootstrap.chunks_in_range(inode, offset, length)


def _inode(built_image, path: str) -> Inode:
    return built_image.bootstrap.inode(built_image.bootstrap.resolve(path))


def test_ranges_find_the_same_refs_as_the_bootstrap(built_image):
    cache = MetadataCache(built_image.bootstrap)
    rng = random.Random(5)
    for path in built_image.files:
        inode = _inode(built_image, path)
        cases = [(0, inode.size), (0, 1), (inode.size - 1, 1), (inode.size, 10)]
        cases += [(rng.randrange(inode.size + 1), rng.randrange(1, 300_000)) for _ in range(200)]
        for offset, length in cases:
            expected = built_image.bootstrap.chunks_in_range(inode, offset, length)
            assert cache.chunks_in_range(inode, offset, length) == expected, (path, offset, length)


def test_a_file_is_decoded_once_however_often_it_is_read(built_image):
    counting = CountingBootstrap(built_image.bootstrap)
    cache = MetadataCache(counting)  # type: ignore[arg-type]
    ino = built_image.bootstrap.resolve("/text")
    for offset in range(0, 1 << 20, 4096):
        inode = cache.inode(ino)
        cache.chunks_in_range(inode, offset, 4096)
    assert counting.calls == Counter(inode=1, chunks=1)


def test_only_the_most_recently_read_files_are_kept(built_image):
    counting = CountingBootstrap(built_image.bootstrap)
    cache = MetadataCache(counting, max_files=2, max_inodes=2)  # type: ignore[arg-type]
    paths = ["/text", "/random-700k", "/odd-size"]
    for path in [*paths, paths[-1], paths[0]]:
        cache.chunks_in_range(cache.inode(built_image.bootstrap.resolve(path)), 0, 10)
    assert counting.calls == Counter(inode=4, chunks=4)  # /text was dropped, then decoded again


def test_files_with_too_many_refs_are_read_from_the_bootstrap_each_time(built_image):
    counting = CountingBootstrap(built_image.bootstrap)
    cache = MetadataCache(counting, max_refs=2)  # type: ignore[arg-type]
    inode = _inode(built_image, "/text")
    for _ in range(3):
        assert cache.chunks_in_range(inode, 0, 100) == built_image.bootstrap.chunks_in_range(inode, 0, 100)
    assert counting.calls == Counter(chunks_in_range=3)


def test_unknown_inodes_are_not_found(built_image):
    cache = MetadataCache(built_image.bootstrap)
    with pytest.raises(NotFound):
        cache.inode(built_image.bootstrap.inode_count + 1)
    assert cache.inode(1) == built_image.bootstrap.inode(1)
