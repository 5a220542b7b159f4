"""glibc malloc settings for the FUSE daemon, which allocates and frees MiB-sized buffers all day long.

Every FUSE read answer, range body and inflated chunk is a buffer of up to tens of MiB. With
glibc's defaults such a buffer is mapped fresh (or carved from a heap that was just trimmed), so
the kernel faults in and zeroes every page of it before a byte is copied: on the benchmark machine
allocating and copying 1 MiB buffers ran at 0.6 GB/s, against 15 GB/s once freed memory was kept
for reuse, and a cold sequential read through the mount took about 7 % less CPU.

Rules:
- `keep_freed_buffers()` is called once by the daemon before it serves; it raises the mmap
  threshold to its maximum (buffers up to 32 MiB come from the heap and are reused) and lets the
  heap keep up to TRIM_THRESHOLD of freed memory instead of returning it at once. Memory the
  daemon stops needing is still returned beyond that.
- Process-wide and best effort: where the C library has no `mallopt` (musl, macOS) or refuses a
  value, nothing changes and the daemon runs as before.
"""

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 256 << 20


def keep_freed_buffers() -> bool:
    """Tune glibc malloc as the module says; return False when the C library does not allow it."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        log.debug("no mallopt in the C library (%s): malloc keeps its defaults", name)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not done:
        log.debug("mallopt refused the buffer settings: malloc keeps its defaults")
    return done
