"""A peer's downloads: the scheduler conversation, parents, the origin, and their shared progress."""
