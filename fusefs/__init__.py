"""fusefs: the pyfuse3 + trio daemon that mounts lazyfly images and fetches chunks on demand."""
