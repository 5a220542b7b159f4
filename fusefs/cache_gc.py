"""Deleting the cache files of blobs, and the bootstraps of images, that nothing served uses any more.

A blob's cache is two files in CACHE/blobs, `<algo>-<hex>.data` and `<algo>-<hex>.map`
(chunk_cache.py); an image's bootstrap and manifest are CACHE/bootstraps/`<algo>-<hex>` and
`<algo>-<hex>.manifest`, named by its manifest digest (bootstrap_store.py). When the snapshotter
stops serving an image, it asks the daemon to collect.

Rules:
- Rule 1: a blob's files are deleted only when its digest is not open in the reader pool, and a
  bootstrap only when no served image was loaded from it; files not named like cache files are
  left alone.
- Rule 2: the file work runs in a worker thread, and ServedImages refuses to collect while an
  image is being added, so a blob is never deleted under a reader that is opening it, nor a
  bootstrap under the add that is storing it. For the same reason a half-written bootstrap
  (`.incoming-*`) found then is the leftover of an add that died, and is deleted too.
"""

import re
from pathlib import Path

from lazyfly.api.fusefs import CacheGcResult
from lazyfly.fusefs.bootstrap_store import BOOTSTRAPS_DIR, INCOMING_PREFIX
from lazyfly.fusefs.chunk_cache import BLOBS_DIR

_CACHE_FILE = re.compile(r"^(?P<algo>[a-z0-9]+)-(?P<hex>[0-9a-f]{32,128})\.(?:data|map)$")
_BOOTSTRAP_FILE = re.compile(r"^(?P<algo>[a-z0-9]+)-(?P<hex>[0-9a-f]{32,128})(?:\.manifest)?$")


def collect_cache(cache_dir: Path, keep_blobs: set[str], keep_bootstraps: set[str]) -> CacheGcResult:
    """Delete the cache files of every blob of CACHE/blobs whose digest is not in `keep_blobs`, and
    the bootstraps of CACHE/bootstraps whose manifest digest is not in `keep_bootstraps`."""
    blobs, blob_bytes = _delete_unkept(cache_dir / BLOBS_DIR, _CACHE_FILE, keep_blobs)
    bootstraps, bootstrap_bytes = _delete_unkept(cache_dir / BOOTSTRAPS_DIR, _BOOTSTRAP_FILE, keep_bootstraps)
    return CacheGcResult(sorted(blobs), blob_bytes + bootstrap_bytes, sorted(bootstraps))


def _delete_unkept(directory: Path, pattern: re.Pattern[str], keep: set[str]) -> tuple[set[str], int]:
    """Delete the files of `directory` named by `pattern` after a digest not in `keep`, and the
    leftovers of interrupted writes; return the digests deleted and the bytes freed."""
    removed: set[str] = set()
    freed = 0
    if not directory.is_dir():
        return removed, freed
    for path in sorted(directory.iterdir()):
        match = pattern.match(path.name)
        if match is not None:
            digest = f"{match['algo']}:{match['hex']}"
            if digest in keep:
                continue
        elif not path.name.startswith(INCOMING_PREFIX):
            continue
        try:
            freed += path.stat().st_blocks * 512
            path.unlink()
        except FileNotFoundError:
            continue
        if match is not None:
            removed.add(digest)
    return removed, freed
