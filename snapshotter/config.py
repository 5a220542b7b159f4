"""Settings of the snapshotter daemon (YAML file or flags; flags win).

Paths left empty are derived from `root`: the fusefs daemon's mountpoint `ROOT/mnt`, its API socket
`ROOT/fusefs.sock` and its chunk cache `ROOT/cache`, so one directory holds a node's snapshots.
"""

from dataclasses import dataclass, field
from pathlib import Path

from lazyfly.api.fusefs import DEFAULT_MERGE_LIMIT, DEFAULT_READ_AHEAD

DEFAULT_ADDRESS = Path("/run/lazyfly/snapshotter.sock")
DEFAULT_ROOT = Path("/var/lib/lazyfly/snapshotter")
# A container's start reads while the prefetch runs; a registry answers each request in ~10 ms
# whatever its size, so several requests in flight fetch a prefetch list far sooner than two.
DEFAULT_PREFETCH_WORKERS = 8


@dataclass
class SnapshotterSettings:
    """Where the snapshotter listens and keeps state, and how it reaches images."""

    address: Path = DEFAULT_ADDRESS
    root: Path = DEFAULT_ROOT
    fusefs_socket: Path | None = None  # an external fusefs daemon; None: run our own
    fusefs_mountpoint: Path | None = None
    cache_dir: Path | None = None
    peer_proxy: str | None = None
    plain_http: list[str] = field(default_factory=list)
    prefetch: str = "table"  # none, table or all
    prefetch_workers: int = DEFAULT_PREFETCH_WORKERS  # concurrent prefetch requests per image
    metrics_address: str | None = None  # HOST:PORT of the Prometheus endpoint; None: none
    merge_limit: int = DEFAULT_MERGE_LIMIT  # bytes of one range request: a miss and what rides along
    read_ahead: int = DEFAULT_READ_AHEAD  # the largest window fetched ahead of a sequential reader; 0: none

    @property
    def managed_fusefs(self) -> bool:
        """Whether the snapshotter runs its own fusefs daemon."""
        return self.fusefs_socket is None

    @property
    def mountpoint(self) -> Path:
        """The fusefs mount the images appear in."""
        return self.fusefs_mountpoint or self.root / "mnt"

    @property
    def api_socket(self) -> Path:
        """The fusefs daemon's API socket."""
        return self.fusefs_socket or self.root / "fusefs.sock"

    @property
    def cache(self) -> Path:
        """The fusefs daemon's chunk cache."""
        return self.cache_dir or self.root / "cache"
