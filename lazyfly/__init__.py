"""lazyfly: the core package shared by every role (image format, OCI client, errors, CLI entry)."""

__version__ = "0.1.0"
