"""Deleting the cache files of blobs that no served image reads any more.

A blob's cache is two files in CACHE/blobs, `<algo>-<hex>.data` and `<algo>-<hex>.map`
(chunk_cache.py). When the snapshotter stops serving an image, it asks the daemon to collect.

Rules:
- Rule 1: a blob's files are deleted only when its digest is not open in the reader pool; files
  not named like cache files are left alone.
- Rule 2: the file work runs in a worker thread, and ServedImages refuses to collect while an
  image is being added, so a blob is never deleted under a reader that is opening it.
"""

import re
from pathlib import Path

from lazyfly.api.fusefs import CacheGcResult

_CACHE_FILE = re.compile(r"^(?P<algo>[a-z0-9]+)-(?P<hex>[0-9a-f]{32,128})\.(?:data|map)$")


def collect_cache(blobs_dir: Path, keep: set[str]) -> CacheGcResult:
    """Delete the cache files of every blob in `blobs_dir` whose digest is not in `keep`."""
    removed: set[str] = set()
    freed = 0
    if not blobs_dir.is_dir():
        return CacheGcResult()
    for path in sorted(blobs_dir.iterdir()):
        match = _CACHE_FILE.match(path.name)
        if match is None:
            continue
        digest = f"{match['algo']}:{match['hex']}"
        if digest in keep:
            continue
        try:
            freed += path.stat().st_blocks * 512
            path.unlink()
        except FileNotFoundError:
            continue
        removed.add(digest)
    return CacheGcResult(sorted(removed), freed)
