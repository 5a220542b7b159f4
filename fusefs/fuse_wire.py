"""The few FUSE kernel-protocol messages a session takeover writes by hand (pure codec).

A new daemon that takes over a live FUSE connection (session_takeover.py) finds the kernel already
initialised, while libfuse insists on seeing FUSE_INIT first. So it is handed a FUSE_INIT made here,
its answer is checked and dropped, and the kernel is asked with FUSE_NOTIFY_RESEND (Linux 6.9,
protocol 7.40) to queue again the requests the dead daemon had read but not answered.

Layouts (include/uapi/linux/fuse.h, little-endian on every Linux FUSE host):
- fuse_in_header: len u32, opcode u32, unique u64, nodeid u64, uid u32, gid u32, pid u32,
  total_extlen u16, padding u16 (40 bytes);
- fuse_init_in as of 7.6–7.35: major u32, minor u32, max_readahead u32, flags u32 (16 bytes);
- fuse_out_header: len u32, error i32 (negative errno, or a notify code with unique 0), unique u64.
"""

import struct

from lazyfly.errors import RemoteProtocolError

IN_HEADER = struct.Struct("<IIQQIIIHH")
INIT_IN = struct.Struct("<IIII")
OUT_HEADER = struct.Struct("<IiQ")

FUSE_INIT = 26
FUSE_NOTIFY_RESEND = 7
KERNEL_VERSION = 7
KERNEL_MINOR = 31  # the newest minor whose fuse_init_in is the 16-byte form

# What a Linux 6.x kernel offers and a read-only libfuse daemon may use; never the splice
# flags, so that libfuse reads and writes plain messages (the takeover relays them over a socket).
INIT_FLAGS = (
    1 << 0  # ASYNC_READ
    | 1 << 1  # POSIX_LOCKS
    | 1 << 3  # ATOMIC_O_TRUNC
    | 1 << 4  # EXPORT_SUPPORT
    | 1 << 5  # BIG_WRITES
    | 1 << 6  # DONT_MASK
    | 1 << 10  # FLOCK_LOCKS
    | 1 << 12  # AUTO_INVAL_DATA
    | 1 << 13  # DO_READDIRPLUS
    | 1 << 14  # READDIRPLUS_AUTO
    | 1 << 15  # ASYNC_DIO
    | 1 << 18  # PARALLEL_DIROPS
    | 1 << 22  # MAX_PAGES
    | 1 << 23  # CACHE_SYMLINKS
)


def init_request(unique: int, max_readahead: int) -> bytes:
    """A FUSE_INIT request as the kernel would send it to a fresh daemon."""
    body = INIT_IN.pack(KERNEL_VERSION, KERNEL_MINOR, max_readahead, INIT_FLAGS)
    header = IN_HEADER.pack(IN_HEADER.size + len(body), FUSE_INIT, unique, 0, 0, 0, 0, 0, 0)
    return header + body


def check_init_reply(reply: bytes, unique: int) -> None:
    """Accept libfuse's answer to `init_request(unique)`; RemoteProtocolError if it refused."""
    if len(reply) < OUT_HEADER.size:
        raise RemoteProtocolError(f"FUSE_INIT answer of {len(reply)} bytes is shorter than its header")
    length, error, answered = OUT_HEADER.unpack_from(reply)
    if answered != unique or length != len(reply):
        raise RemoteProtocolError(f"FUSE_INIT answer for request {answered} of {length} bytes is not ours")
    if error != 0:
        raise RemoteProtocolError(f"libfuse refused FUSE_INIT: errno {-error}")


def notify_resend() -> bytes:
    """FUSE_NOTIFY_RESEND: the kernel requeues every request read but not yet answered."""
    return OUT_HEADER.pack(OUT_HEADER.size, FUSE_NOTIFY_RESEND, 0)
