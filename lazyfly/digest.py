"""Content digests: blake3 for chunks, sha256 for OCI blobs, written `algo:hex`."""

import hashlib

import blake3

from lazyfly.errors import InvalidArgument

BLAKE3_SIZE = 32


def blake3_digest(data: bytes | memoryview) -> bytes:
    """Return the raw 32-byte blake3 digest of `data` (releases the GIL on big buffers)."""
    return blake3.blake3(data, max_threads=1).digest()


def sha256_hex(data: bytes | memoryview) -> str:
    """Return `sha256:<hex>` of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: str, block: int = 1 << 20) -> tuple[str, int]:
    """Return (`sha256:<hex>`, size) of the file at `path`, read in blocks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while data := f.read(block):
            h.update(data)
            size += len(data)
    return "sha256:" + h.hexdigest(), size


def split_digest(text: str) -> tuple[str, str]:
    """Split `algo:hex` and check the hex length for the algorithms we know."""
    algo, _, hexpart = text.partition(":")
    lengths = {"sha256": 64, "blake3": 64, "sha512": 128}
    if algo not in lengths or len(hexpart) != lengths[algo] or not _is_lower_hex(hexpart):
        raise InvalidArgument(f"not a digest: {text!r}")
    return algo, hexpart


def _is_lower_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
