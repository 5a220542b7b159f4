"""The lazyfly image format: pure codecs for the data-blob chunk table and the bootstrap (docs/format.md)."""
