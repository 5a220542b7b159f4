"""Encode a bootstrap: inodes, sorted directory entries, chunk refs, xattrs, blobs, prefetch.

Rules kept here so the reader can rely on them:
- inode numbers are 1..N in list order, the root is inode 1;
- a directory's entries are sorted by name bytes (binary search) and exclude `.` and `..`;
- a file's chunk refs are sorted by file offset and never overlap; holes have no ref;
- every body byte is covered by a per-block blake3, and the header's blake3 covers the header and
  the block-digest table, so a reader verifies what it touches and nothing else.
"""

from collections.abc import Sequence

from lazyfly.digest import blake3_digest
from lazyfly.errors import LocalProtocolError
from lazyfly.format.layout import (
    BLOB,
    BLOB_FLAG_PREFETCH,
    BOOTSTRAP_MAGIC,
    BOOTSTRAP_VERSION,
    CHUNK_REF,
    DIRENT,
    HEADER,
    HEADER_DIGEST_OFFSET,
    HEADER_SIZE,
    INODE,
    PREFETCH,
    ROOT_INO,
    SECTIONS,
    VERIFY_BLOCK_SIZE,
    XATTR,
    BlobInfo,
    InodeSpec,
    is_valid_chunk_size,
)

_U32 = 1 << 32


class _Strings:
    """The string heap: names, symlink targets and xattr values, each stored once."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.seen: dict[bytes, int] = {}

    def add(self, data: bytes) -> tuple[int, int]:
        off = self.seen.get(data)
        if off is None:
            off = len(self.buf)
            if off + len(data) >= _U32:
                raise LocalProtocolError("bootstrap string heap exceeds 4 GiB")
            self.buf += data
            self.seen[data] = off
        return off, len(data)


def encode_bootstrap(
    inodes: Sequence[InodeSpec],
    blobs: Sequence[BlobInfo],
    prefetch: Sequence[int],
    chunk_size: int,
) -> bytes:
    """Return the bootstrap bytes for `inodes` (inode i+1 is inodes[i])."""
    if not inodes or (inodes[0].mode & 0o170000) != 0o040000:
        raise LocalProtocolError("the first inode must be the root directory")
    if not is_valid_chunk_size(chunk_size):
        raise LocalProtocolError(f"invalid chunk size {chunk_size}")
    strings = _Strings()
    inode_buf = bytearray()
    dirent_buf = bytearray()
    chunk_buf = bytearray()
    xattr_buf = bytearray()
    n_dirents = n_chunks = n_xattrs = 0
    dirs_named: set[int] = set()
    for ino, spec in enumerate(inodes, start=ROOT_INO):
        is_dir = (spec.mode & 0o170000) == 0o040000
        if is_dir:
            first, count = n_dirents, len(spec.entries)
            last = None
            for name, child in sorted(spec.entries):
                if name == last or not name or b"/" in name or name in (b".", b".."):
                    raise LocalProtocolError(f"inode {ino}: bad or duplicate entry name {name!r}")
                if not ROOT_INO < child <= len(inodes):
                    raise LocalProtocolError(f"inode {ino}: entry {name!r} points to inode {child}")
                if len(name) > 0xFFFF:
                    raise LocalProtocolError(f"inode {ino}: entry name of {len(name)} bytes")
                if (inodes[child - 1].mode & 0o170000) == 0o040000:
                    # Directories form a tree: one name each, under the parent they record.
                    if inodes[child - 1].parent != ino or child in dirs_named:
                        raise LocalProtocolError(f"inode {ino}: directory {name!r} would make a cycle")
                    dirs_named.add(child)
                last = name
                off, length = strings.add(name)
                dirent_buf += DIRENT.pack(off, length, inodes[child - 1].mode >> 12, child)
            n_dirents += count
        else:
            first, count = n_chunks, len(spec.chunks)
            end = 0
            for ref in spec.chunks:
                if ref.file_offset < end or ref.file_offset + ref.uncompressed_size > spec.size:
                    raise LocalProtocolError(f"inode {ino}: chunk refs overlap or pass the file size")
                if not 0 <= ref.blob_index < len(blobs):
                    raise LocalProtocolError(f"inode {ino}: chunk ref to blob {ref.blob_index}")
                end = ref.file_offset + ref.uncompressed_size
                chunk_buf += CHUNK_REF.pack(
                    ref.file_offset,
                    ref.compressed_offset,
                    ref.uncompressed_offset,
                    ref.compressed_size,
                    ref.uncompressed_size,
                    ref.blob_index,
                    int(ref.compressor),
                    ref.digest,
                )
            n_chunks += count
        xattr_first = n_xattrs
        for name, value in sorted(spec.xattrs.items()):
            name_off, name_len = strings.add(name)
            value_off, value_len = strings.add(value)
            xattr_buf += XATTR.pack(name_off, name_len, value_off, value_len)
            n_xattrs += 1
        target_off, target_len = strings.add(spec.target) if spec.target else (0, 0)
        inode_buf += INODE.pack(
            spec.mode,
            spec.uid,
            spec.gid,
            spec.nlink,
            spec.size,
            spec.blocks,
            spec.mtime_ns // 1_000_000_000,
            spec.mtime_ns % 1_000_000_000,
            0,
            spec.rdev,
            spec.parent,
            first,
            count,
            xattr_first,
            len(spec.xattrs),
            target_off,
            target_len,
        )
    for blob in blobs:
        if len(blob.digest) != 71 or not blob.digest.startswith("sha256:"):
            raise LocalProtocolError(f"blob digest {blob.digest!r} is not sha256:<64 hex>")
    if any(not ROOT_INO <= ino <= len(inodes) for ino in prefetch):
        raise LocalProtocolError("prefetch table names an inode that does not exist")
    blob_buf = b"".join(
        BLOB.pack(
            bytes.fromhex(b.digest.removeprefix("sha256:")),
            b.compressed_size,
            b.uncompressed_size,
            b.chunk_count,
            BLOB_FLAG_PREFETCH if b.prefetch else 0,
        )
        for b in blobs
    )
    prefetch_buf = b"".join(PREFETCH.pack(ino) for ino in prefetch)
    sections = {
        "inodes": inode_buf,
        "dirents": dirent_buf,
        "chunks": chunk_buf,
        "xattrs": xattr_buf,
        "strings": strings.buf,
        "blobs": blob_buf,
        "prefetch": prefetch_buf,
    }
    body = bytearray()
    placed: list[int] = []
    for name in SECTIONS:
        body += b"\0" * (-len(body) % 8)
        placed += [HEADER_SIZE + len(body), len(sections[name])]
        body += sections[name]
    body += b"\0" * (-len(body) % 8)
    digests = b"".join(
        blake3_digest(memoryview(body)[i : i + VERIFY_BLOCK_SIZE])
        for i in range(0, len(body), VERIFY_BLOCK_SIZE)
    )
    digest_offset = HEADER_SIZE + len(body)
    header = HEADER.pack(
        BOOTSTRAP_MAGIC,
        BOOTSTRAP_VERSION,
        HEADER_SIZE,
        0,
        chunk_size,
        VERIFY_BLOCK_SIZE,
        len(inodes),
        ROOT_INO,
        *placed,
        digest_offset,
        len(digests) // 32,
        digest_offset + len(digests),
    ).ljust(HEADER_DIGEST_OFFSET, b"\0")
    header += blake3_digest(header + digests)
    return bytes(header + body + digests)
