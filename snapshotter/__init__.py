"""snapshotter: the containerd remote snapshotter that starts containers from lazily loaded images."""
