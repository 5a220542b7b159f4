"""The persistent readiness map of one blob's cache file: one bit per 4 KiB page of its uncompressed space.

A blob's chunks start on page boundaries (docs/format.md §2), so bit k names the chunk whose first
page is k; only that bit is used, the bits of the chunk's other pages stay 0. The map is a small file
(a 256-byte header, then ⌈pages / 8⌉ bitmap bytes) mapped MAP_SHARED, so setting a bit is a store
into the page cache, not a system call.

Rules:
- Rule 1 (ordering): the owner sets bit k only after the pwrite of the chunk's verified bytes into
  the data file has returned. Both writes land in the page cache of the same kernel, so a set bit
  always has its data there: a crash of the daemon (kill -9, OOM) loses neither, and the next
  daemon reuses the map as it is.
- Rule 2 (power loss): the kernel writes dirty pages back in no particular order across files, so
  after a power loss a bit may be on disk while its data is not. We do not pay an fsync per chunk
  to prevent that. Instead `open` writes and fsyncs a header in state "open" with the boot id of
  the running kernel before any bit can change, and `close` sets state "clean" only after msync of
  the bits (and after the owner made the data durable, see ChunkCache.close). On open, a map left
  "open" by another boot is reset. What we accept: a power loss (or any reboot without a clean
  close) throws away the whole cache of every blob that was open, which is fetched again; we rely
  on the disk honouring fsync. We never serve unverified bytes.
- Rule 3 (identity): the header names the blob (its digest text) and its uncompressed size; a map
  whose magic, version, blob or size differ, or whose length is wrong, is reset, never reused.
- Rule 4 (one owner): the map file is flock'ed for as long as it is open, so a second opener (another
  daemon, or the same blob opened twice instead of sharing one reader) fails with
  FailedPrecondition instead of racing on the bits.
- Offsets must be page-aligned and inside the blob, or the call raises Corrupt: a bad chunk ref
  never indexes the map.
- Pure file I/O, no trio. Not thread-safe: bits are read-modify-written bytes, so one thread
  (the event loop) sets them.
"""

import errno
import fcntl
import mmap
import os
import struct
from pathlib import Path

from lazyfly.errors import Corrupt, FailedPrecondition
from lazyfly.format.layout import UNCOMPRESSED_ALIGNMENT

MAP_MAGIC = b"LZFYCMAP"
MAP_VERSION = 1
# magic, version, state, reserved, uncompressed size, boot id, blob digest text (NUL padded)
MAP_HEADER = struct.Struct("<8sHHIQ16s160s56x")
MAP_HEADER_SIZE = MAP_HEADER.size
assert MAP_HEADER_SIZE == 256
STATE_CLEAN = 0
STATE_OPEN = 1
PAGE = UNCOMPRESSED_ALIGNMENT
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def current_boot_id() -> bytes:
    """Return the 16-byte id of the running kernel's boot (zeros where the system has none)."""
    try:
        with open(BOOT_ID_PATH) as f:
            return bytes.fromhex(f.read().strip().replace("-", ""))[:16].ljust(16, b"\0")
    except (OSError, ValueError):
        return bytes(16)


def bitmap_size(uncompressed_size: int) -> int:
    """Bytes of bitmap for a blob of `uncompressed_size` bytes: one bit per started page."""
    pages = -(-uncompressed_size // PAGE)
    return -(-pages // 8)


class ChunkMap:
    """The readiness bits of one blob, backed by a shared mapping of its map file."""

    def __init__(self, path: Path, blob_digest: str, uncompressed_size: int, fd: int, fresh: bool) -> None:
        self.path = path
        self.blob_digest = blob_digest
        self.uncompressed_size = uncompressed_size
        # True when open found no reusable map and started an empty one: the owner must then drop
        # whatever the data file holds, since no bit vouches for it.
        self.fresh = fresh
        self._fd = fd
        self._mm: mmap.mmap | None = mmap.mmap(fd, MAP_HEADER_SIZE + bitmap_size(uncompressed_size))

    @classmethod
    def open(cls, path: Path, blob_digest: str, uncompressed_size: int) -> "ChunkMap":
        """Open (or create, or reset) the map at `path` for blob `blob_digest`; lock it."""
        name = blob_digest.encode()
        if len(name) > 160 or uncompressed_size < 0:
            raise Corrupt(f"cannot map blob {blob_digest!r} of {uncompressed_size} bytes")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise FailedPrecondition(f"chunk map {path} of blob {blob_digest} is in use") from None
                raise
            boot_id = current_boot_id()
            length = MAP_HEADER_SIZE + bitmap_size(uncompressed_size)
            fresh = not _reusable(fd, name, uncompressed_size, boot_id, length)
            if fresh:
                # Drop every old bit before the new header names this blob: a crash between the two
                # leaves a bad header, which the next open resets again.
                os.ftruncate(fd, 0)
                os.ftruncate(fd, length)
            header = MAP_HEADER.pack(MAP_MAGIC, MAP_VERSION, STATE_OPEN, 0, uncompressed_size, boot_id, name)
            os.pwrite(fd, header, 0)
            # The "open" state must be on disk before any new bit can be: otherwise a power loss
            # could leave an old "clean" header in front of bits whose data never reached the disk.
            os.fsync(fd)
            return cls(path, blob_digest, uncompressed_size, fd, fresh)
        except BaseException:
            os.close(fd)
            raise

    def _page(self, uncompressed_offset: int) -> int:
        if uncompressed_offset % PAGE or not 0 <= uncompressed_offset < self.uncompressed_size:
            raise Corrupt(
                f"blob {self.blob_digest}: chunk offset {uncompressed_offset} is not a page of its "
                f"{self.uncompressed_size}-byte uncompressed space"
            )
        return uncompressed_offset // PAGE

    def _map(self) -> mmap.mmap:
        if self._mm is None:
            raise FailedPrecondition(f"chunk map {self.path} is closed")
        return self._mm

    def is_ready(self, uncompressed_offset: int) -> bool:
        """True if the chunk starting at `uncompressed_offset` is written and verified."""
        page = self._page(uncompressed_offset)
        return bool(self._map()[MAP_HEADER_SIZE + page // 8] & (1 << (page % 8)))

    def mark_ready(self, uncompressed_offset: int) -> None:
        """Record the chunk at `uncompressed_offset` as written and verified (Rule 1: after the write)."""
        page = self._page(uncompressed_offset)
        mm = self._map()
        mm[MAP_HEADER_SIZE + page // 8] |= 1 << (page % 8)

    def reset(self) -> None:
        """Clear every bit (the owner found the data file unusable)."""
        mm = self._map()
        mm[MAP_HEADER_SIZE:] = bytes(len(mm) - MAP_HEADER_SIZE)

    def ready_count(self) -> int:
        """Return the number of ready chunks."""
        return int.from_bytes(self._map()[MAP_HEADER_SIZE:], "little").bit_count()

    def close(self, *, clean: bool = True) -> None:
        """Flush the bits, then mark the map clean (Rule 2), unlock and unmap. Idempotent.

        The owner makes the data file durable before calling this, so a clean map never names
        data that a power loss could take away; if it could not, it passes `clean=False`.
        """
        if self._mm is None:
            return
        mm, self._mm = self._mm, None
        try:
            mm.flush()
            if clean:
                mm[8:12] = struct.pack("<HH", MAP_VERSION, STATE_CLEAN)
                mm.flush()
        finally:
            mm.close()
            os.close(self._fd)


def _reusable(fd: int, name: bytes, uncompressed_size: int, boot_id: bytes, length: int) -> bool:
    """True if the map file at `fd` is this blob's, whole, and trustworthy after the last shutdown."""
    if os.fstat(fd).st_size != length:
        return False
    raw = os.pread(fd, MAP_HEADER_SIZE, 0)
    if len(raw) != MAP_HEADER_SIZE:
        return False
    magic, version, state, _, size, old_boot, old_name = MAP_HEADER.unpack(raw)
    if magic != MAP_MAGIC or version != MAP_VERSION or size != uncompressed_size:
        return False
    if old_name.rstrip(b"\0") != name:
        return False
    # Left open by this same boot: the daemon died but the page cache holds every write (Rule 1).
    # Left open by an earlier boot: possibly a power loss, so the bits may outrun the data (Rule 2).
    return state == STATE_CLEAN or old_boot == boot_id
