"""A peer's pieces: metadata in RocksDB, content in one sparse file per task."""
