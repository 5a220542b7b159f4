"""Blob backends: where a node reads ranges of data blobs (an OCI layout, a registry, a peer's proxy)."""
