"""Settings of the FUSE daemon and of one mounted image (YAML file or flags; flags win)."""

from dataclasses import dataclass, field
from pathlib import Path

from lazyfly.api.fusefs import DEFAULT_READ_AHEAD

DEFAULT_CACHE_DIR = Path("/var/lib/lazyfly/fusefs/cache")
DEFAULT_MERGE_LIMIT = 4 << 20
DEFAULT_MOUNT_TIMEOUT = 30.0


@dataclass
class BackendSettings:
    """Where an image's blobs are read from: `auto`, `local`, `registry` or `proxy`."""

    kind: str = "auto"
    proxy_url: str | None = None
    plain_http: bool = False


@dataclass
class PrefetchSettings:
    """What to fetch before it is read: `none`, `table` (the bootstrap's list), or `all`."""

    mode: str = "table"
    files: list[str] = field(default_factory=list)
    bandwidth: int = 0  # bytes per second; 0 means no cap
    workers: int = 2


@dataclass
class ImageSettings:
    """How one image is served."""

    backend: BackendSettings = field(default_factory=BackendSettings)
    prefetch: PrefetchSettings = field(default_factory=PrefetchSettings)
    merge_limit: int = DEFAULT_MERGE_LIMIT
    read_ahead: int = DEFAULT_READ_AHEAD  # bytes: the largest read-ahead window; 0: none


@dataclass
class DaemonSettings:
    """The daemon's own settings."""

    cache_dir: Path = DEFAULT_CACHE_DIR
    mount_timeout: float = DEFAULT_MOUNT_TIMEOUT
    allow_other: bool = True
    # The kernel's read-ahead on the mount (FUSE starts at 128). It is also the window the kernel
    # reads around each page fault of a mapped file, which is how shared libraries load: at 4 MiB
    # a container start fetched 13 % more bytes, and sequential reads no faster (fusefs reads
    # ahead of sequential readers itself, read_ahead.py).
    read_ahead_kb: int = 1024
