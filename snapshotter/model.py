"""What a snapshot is, as containerd's snapshots v1 API sees it: kinds, info, usage.

Pure data: the metastore stores these, the service turns them into protobuf messages.
"""

import enum
from dataclasses import dataclass, field


class Kind(enum.IntEnum):
    """A snapshot's kind, with containerd's numbers (they go on the wire as they are)."""

    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3

    @property
    def title(self) -> str:
        """The name containerd prints and filters on (`kind==Committed`)."""
        return self.name.capitalize()


@dataclass
class Info:
    """One snapshot: `name` is the key of an active or view snapshot, or the committed name."""

    name: str
    parent: str = ""
    kind: Kind = Kind.UNKNOWN
    created_ns: int = 0
    updated_ns: int = 0
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Usage:
    """Disk space and inodes a snapshot's own directory takes (not its parents')."""

    size: int = 0
    inodes: int = 0


@dataclass
class Mount:
    """One mount containerd performs: `mount -t type -o options source target`."""

    type: str
    source: str
    options: list[str] = field(default_factory=list)
