import errno
import os
from pathlib import Path

import pytest

from lazyfly.compression import Compressor, compress
from lazyfly.digest import blake3_digest
from lazyfly.errors import Corrupt, FailedPrecondition
from lazyfly.format.layout import BlobInfo, ChunkRef
from lazyfly.fusefs.chunk_cache import CacheFull, ChunkCache
from lazyfly.fusefs.run_sink import RunSink
from lazyfly.range_sink import feed

PAGE = 4096
BLOB = BlobInfo("sha256:" + "e" * 64, compressed_size=1 << 20, uncompressed_size=1 << 20, chunk_count=3)


def _stored_run(chunks: list[bytes], gap: int) -> tuple[list[ChunkRef], bytes]:
    """Refs of `chunks` stored one after another with `gap` junk bytes between them, and the run's bytes."""
    refs, run = [], b""
    for i, chunk in enumerate(chunks):
        stored, compressor = compress(chunk, Compressor.ZSTD)
        if i:
            run += b"\xee" * gap
        refs.append(
            ChunkRef(0, 0, len(run), len(stored), i * 64 * PAGE, len(chunk), compressor, blake3_digest(chunk))
        )
        run += stored
    return refs, run


def test_each_chunk_is_verified_and_stored_as_it_arrives_and_gaps_are_skipped(tmp_path: Path):
    chunks = [os.urandom(3 * PAGE), b"compressible " * 2000, os.urandom(PAGE + 5)]
    refs, run = _stored_run(chunks, gap=100)
    cache = ChunkCache.open(tmp_path, BLOB)
    sink = RunSink(BLOB, cache, refs, 0)
    assert sink.piece_sizes == [
        refs[0].compressed_size,
        100,
        refs[1].compressed_size,
        100,
        refs[2].compressed_size,
    ]
    feed(sink, run)
    for ref, chunk, (got, full) in zip(refs, chunks, sink.outcomes, strict=True):  # type: ignore[misc]
        assert got == chunk and full is None
        assert cache.read(ref.uncompressed_offset, ref.uncompressed_size) == chunk
    assert refs[0].compressor is Compressor.NONE and sink.outcomes[0][0].obj is not sink.buffer  # type: ignore[union-attr]
    cache.close()


def test_a_chunk_that_fails_its_digest_is_corrupt_and_not_written(tmp_path: Path):
    chunks = [os.urandom(2 * PAGE), os.urandom(2 * PAGE)]
    refs, run = _stored_run(chunks, gap=0)
    tampered = bytearray(run)
    tampered[refs[1].compressed_offset + 7] ^= 1
    cache = ChunkCache.open(tmp_path, BLOB)
    sink = RunSink(BLOB, cache, refs, 0)
    feed(sink, tampered)
    assert sink.outcomes[0][0] == chunks[0]  # type: ignore[index]
    assert isinstance(sink.outcomes[1], Corrupt) and str(refs[1].uncompressed_offset) in str(sink.outcomes[1])
    assert cache.read(refs[1].uncompressed_offset, PAGE) == bytes(PAGE)  # nothing written there
    cache.close()


def test_a_restarted_delivery_forgets_the_earlier_attempt(tmp_path: Path):
    chunks = [os.urandom(PAGE), os.urandom(PAGE)]
    refs, run = _stored_run(chunks, gap=0)
    cache = ChunkCache.open(tmp_path, BLOB)
    sink = RunSink(BLOB, cache, refs, 0)
    sink.restart()
    sink.take(memoryview(run)[: refs[0].compressed_size])  # an attempt that broke off after one chunk
    feed(sink, run)
    assert [outcome[0] for outcome in sink.outcomes] == chunks  # type: ignore[index]
    cache.close()


def test_after_close_no_piece_is_taken(tmp_path: Path):
    refs, run = _stored_run([os.urandom(PAGE)], gap=0)
    cache = ChunkCache.open(tmp_path, BLOB)
    sink = RunSink(BLOB, cache, refs, 0)
    sink.close()
    with pytest.raises(FailedPrecondition, match=BLOB.digest):
        feed(sink, run)
    assert sink.outcomes == [] and cache.read(0, PAGE) == bytes(PAGE)
    cache.close()


def test_overlapping_refs_are_refused(tmp_path: Path):
    refs, _ = _stored_run([os.urandom(2 * PAGE), os.urandom(2 * PAGE)], gap=0)
    overlapping = [
        refs[0],
        ChunkRef(0, 0, 10, refs[1].compressed_size, 64 * PAGE, 2 * PAGE, Compressor.NONE, b""),
    ]
    cache = ChunkCache.open(tmp_path, BLOB)
    with pytest.raises(ValueError, match="overlap"):
        RunSink(BLOB, cache, overlapping, 0)
    cache.close()


def test_a_raw_chunk_that_does_not_fit_is_kept_as_a_copy(tmp_path: Path, monkeypatch):
    chunk = os.urandom(2 * PAGE)
    refs, run = _stored_run([chunk], gap=0)
    cache = ChunkCache.open(tmp_path, BLOB)

    def full(offset: int, data: bytes) -> None:
        raise CacheFull(f"no room: {errno.ENOSPC}")

    monkeypatch.setattr(cache, "write", full)
    sink = RunSink(BLOB, cache, refs, 0)
    sink.restart()
    sink.buffer[: len(run)] = run
    sink.take(memoryview(sink.buffer)[: len(run)])
    sink.buffer[:] = bytes(len(sink.buffer))  # the producer reuses its buffer
    kept, why = sink.outcomes[0]  # type: ignore[misc]
    assert kept == chunk and isinstance(why, CacheFull)
    cache.close()


def test_each_outcome_is_announced_with_its_index_as_soon_as_it_is_known(tmp_path: Path):
    chunks = [os.urandom(PAGE), os.urandom(PAGE), os.urandom(PAGE)]
    refs, run = _stored_run(chunks, gap=10)
    cache = ChunkCache.open(tmp_path, BLOB)
    announced: list[tuple[int, object]] = []
    sink = RunSink(BLOB, cache, refs, 0, announce=lambda index, outcome: announced.append((index, outcome)))
    sink.restart()
    sink.take(memoryview(run)[: refs[0].compressed_size])
    assert [index for index, _ in announced] == [0] and announced[0][1][0] == chunks[0]  # type: ignore[index]
    feed(sink, run)  # a retry announces every chunk again
    assert [index for index, _ in announced] == [0, 0, 1, 2]
    cache.close()
