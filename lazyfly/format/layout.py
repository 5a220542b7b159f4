"""Byte layouts of the lazyfly format: magics, versions and fixed-size record structs.

Every integer is little-endian. Records have fixed sizes so that a reader finds record `i` of a
section at `offset + i * size` without parsing what comes before it (docs/format.md).
"""

import struct
from dataclasses import dataclass, field

from lazyfly.compression import Compressor

MIN_CHUNK_SIZE = 4 << 10
MAX_CHUNK_SIZE = 16 << 20
DEFAULT_CHUNK_SIZE = 1 << 20
# Chunks start at multiples of this in a blob's uncompressed space (see docs/format.md).
UNCOMPRESSED_ALIGNMENT = 4 << 10

# --- data blob tail ---------------------------------------------------------------------------

BLOB_MAGIC = b"LZFYBLOB"
BLOB_VERSION = 1
# magic, version, flags, chunk count, table offset, uncompressed size, table blake3
BLOB_TAIL = struct.Struct("<8sHHIQQ32s")
# uncompressed offset, compressed offset, uncompressed size, compressed size, flags, reserved, blake3
CHUNK_ENTRY = struct.Struct("<QQIIII32s")
assert BLOB_TAIL.size == 64 and CHUNK_ENTRY.size == 64

# Low bits of a chunk's flags hold its Compressor.
COMPRESSOR_MASK = 0xF

# --- bootstrap --------------------------------------------------------------------------------

BOOTSTRAP_MAGIC = b"LZFYBOOT"
BOOTSTRAP_VERSION = 1
HEADER_SIZE = 256
HEADER_DIGEST_OFFSET = HEADER_SIZE - 32
VERIFY_BLOCK_SIZE = 64 << 10
SECTIONS = ("inodes", "dirents", "chunks", "xattrs", "strings", "blobs", "prefetch")
# magic, version, header size, flags, chunk size, verify block size, inode count, root ino,
# 7 x (section offset, section size), block-digest table offset, block count, file size
HEADER = struct.Struct("<8sHHIIIII" + "QQ" * len(SECTIONS) + "QQQ")
assert HEADER.size <= HEADER_DIGEST_OFFSET
ROOT_INO = 1

# mode, uid, gid, nlink, size, blocks, mtime s, mtime ns, flags, rdev, parent,
# first, count (dir: dirents; file: chunk refs), xattr first, xattr count, target off, target len
INODE = struct.Struct("<IIIIQQqIIQIIIIIII12x")
# name offset, name length, file type (mode >> 12), ino
DIRENT = struct.Struct("<IHHI")
# file offset, compressed offset in blob, uncompressed offset in blob, compressed size,
# uncompressed size, blob index, flags (compressor), blake3
CHUNK_REF = struct.Struct("<QQQIIII32s")
# name offset, name length, value offset, value length
XATTR = struct.Struct("<IIII")
# sha256 of the blob, compressed size, uncompressed size, chunk count, flags
BLOB = struct.Struct("<32sQQII8x")
BLOB_FLAG_PREFETCH = 1  # the blob holds the chunks the prefetch table asks for
PREFETCH = struct.Struct("<I")
assert INODE.size == 96 and DIRENT.size == 12 and CHUNK_REF.size == 72 and BLOB.size == 64


@dataclass(frozen=True, slots=True)
class ChunkEntry:
    """One chunk of a data blob, as its tail table lists it."""

    uncompressed_offset: int
    compressed_offset: int
    uncompressed_size: int
    compressed_size: int
    compressor: Compressor
    digest: bytes


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """Where the bytes of a file at `file_offset` live: a chunk of blob `blob_index`."""

    file_offset: int
    blob_index: int
    compressed_offset: int
    compressed_size: int
    uncompressed_offset: int
    uncompressed_size: int
    compressor: Compressor
    digest: bytes


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A data blob of the image: its OCI digest (`sha256:hex`) and sizes; `prefetch` marks the
    blob the builder stored the prefetch list's chunks in."""

    digest: str
    compressed_size: int
    uncompressed_size: int
    chunk_count: int
    prefetch: bool = False


@dataclass(slots=True)
class Inode:
    """One inode as stored: POSIX attributes plus indexes into the other sections."""

    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    size: int
    blocks: int
    mtime_ns: int
    rdev: int
    parent: int = 0
    first: int = 0
    count: int = 0
    xattr_first: int = 0
    xattr_count: int = 0
    target_off: int = 0
    target_len: int = 0


@dataclass(slots=True)
class InodeSpec:
    """What the bootstrap writer needs to know of one inode."""

    mode: int
    uid: int = 0
    gid: int = 0
    nlink: int = 1
    size: int = 0
    blocks: int = 0
    mtime_ns: int = 0
    rdev: int = 0
    parent: int = 0
    entries: list[tuple[bytes, int]] = field(default_factory=list)
    chunks: list[ChunkRef] = field(default_factory=list)
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    target: bytes = b""


def is_valid_chunk_size(size: int) -> bool:
    """Chunk sizes are powers of two from 4 KiB to 16 MiB."""
    return MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE and size & (size - 1) == 0
