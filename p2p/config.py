"""Settings of the peer daemon (YAML file or flags; flags win), with Dragonfly's ports as defaults.

Paths left empty are derived from `data_dir`: the download socket `DATA_DIR/dfdaemon.sock`.
Rates are bytes per second, 0 meaning unlimited; the disk GC's thresholds are percentages of
`gc.quota` bytes when one is set, else of the file system holding `data_dir`.
"""

import socket
from dataclasses import dataclass, field
from pathlib import Path

from lazyfly.p2p.proxy.headers import DEFAULT_RULES

DEFAULT_DATA_DIR = Path("/var/lib/lazyfly/peer")


@dataclass
class GcSettings:
    """When the disk GC runs and how much it frees."""

    interval: float = 60.0
    high_percent: float = 80.0
    low_percent: float = 60.0
    quota: int = 0  # bytes of content the peer may hold; 0: the file system's size


@dataclass
class RateSettings:
    """Bandwidth limits in bytes per second (0: unlimited)."""

    download: int = 0
    upload: int = 0
    prefetch: int = 0


@dataclass
class ProxySettings:
    """Where the proxy listens (local clients by default), and which URLs go through P2P."""

    listen: str = "127.0.0.1"
    rules: list[str] = field(default_factory=lambda: list(DEFAULT_RULES))
    default_registry: str | None = None  # origin of registry-mirror requests without X-Dragonfly-Registry


@dataclass
class PeerSettings:
    """Who the peer is, where it listens and keeps pieces, and its limits."""

    seed: bool = False
    scheduler: str | None = None  # HOST:PORT; None: every download goes to the origin
    data_dir: Path = DEFAULT_DATA_DIR
    ip: str = "127.0.0.1"
    hostname: str = field(default_factory=socket.gethostname)
    idc: str = ""
    location: str = ""
    upload_port: int = 4000
    proxy_port: int = 4001
    metrics_port: int = 4002
    vortex_port: int = 4005
    download_socket: Path | None = None
    concurrent_pieces: int = 8
    announce_interval: float = 30.0
    gc: GcSettings = field(default_factory=GcSettings)
    rates: RateSettings = field(default_factory=RateSettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)

    @property
    def socket_path(self) -> Path:
        """The DfdaemonDownload socket."""
        return self.download_socket or self.data_dir / "dfdaemon.sock"
