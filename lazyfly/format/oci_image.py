"""How a lazyfly image sits in OCI: media types, annotations, and the bootstrap layer's tar.

A lazyfly image is an ordinary OCI image: one data-blob layer per source layer (media type
BLOB_MEDIA_TYPE, the blob's bytes as they are, so its diff_id is its digest), then the bootstrap
layer last (a gzip tar holding BOOTSTRAP_PATH). Every layer carries ANNOTATION_* keys so the
snapshotter and fusefs recognise it without reading it.
"""

import gzip
import hashlib
import io
import tarfile
import zlib

from lazyfly.errors import RemoteProtocolError

FORMAT_VERSION = "1"
# Under containerd's layer prefix, so that containerd counts data blobs as layers (one per diff_id).
BLOB_MEDIA_TYPE = "application/vnd.oci.image.layer.lazyfly.blob.v1"
BOOTSTRAP_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
BOOTSTRAP_PATH = "image/image.boot"
# The bootstrap is metadata: even 100 000 files stay far below this bound.
MAX_BOOTSTRAP_SIZE = 1 << 30

ANNOTATION_PREFIX = "io.lazyfly."
ANNOTATION_IMAGE = "io.lazyfly.image"  # on the manifest: the format version
ANNOTATION_BLOB = "io.lazyfly.blob"  # on a data-blob layer: "true"
ANNOTATION_BOOTSTRAP = "io.lazyfly.bootstrap"  # on the bootstrap layer: "true"
ANNOTATION_UNCOMPRESSED_SIZE = "io.lazyfly.blob.uncompressed-size"
ANNOTATION_CHUNK_COUNT = "io.lazyfly.blob.chunk-count"
ANNOTATION_SOURCE_LAYER = "io.lazyfly.blob.source-layer"
ANNOTATION_CHUNK_SIZE = "io.lazyfly.chunk-size"
ANNOTATION_COMPRESSOR = "io.lazyfly.compressor"
ANNOTATION_FROM_DICTIONARY = "io.lazyfly.blob.from-chunk-dict"


def bootstrap_layer(bootstrap: bytes) -> tuple[bytes, str]:
    """Return the gzip tar holding `bootstrap` and its diff_id (sha256 of the plain tar).

    The tar is reproducible: fixed owner, mode and mtime, and a gzip header without a timestamp.
    """
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("image",):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo(BOOTSTRAP_PATH)
        info.size, info.mode = len(bootstrap), 0o644
        tar.addfile(info, io.BytesIO(bootstrap))
    raw = plain.getvalue()
    return gzip.compress(raw, compresslevel=6, mtime=0), "sha256:" + hashlib.sha256(raw).hexdigest()


def read_bootstrap_layer(layer: bytes) -> bytes:
    """Return the bootstrap inside a bootstrap layer (gzip tar, or plain tar)."""
    try:
        raw = gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            member = tar.getmember(BOOTSTRAP_PATH)
            if not member.isreg() or member.size > MAX_BOOTSTRAP_SIZE:
                raise RemoteProtocolError(f"{BOOTSTRAP_PATH} in the bootstrap layer is not a file")
            stream = tar.extractfile(member)
            assert stream is not None
            return stream.read()
    except KeyError:
        raise RemoteProtocolError(f"bootstrap layer holds no {BOOTSTRAP_PATH}") from None
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        raise RemoteProtocolError(f"bootstrap layer is damaged: {exc}") from exc
