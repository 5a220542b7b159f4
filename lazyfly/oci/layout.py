"""OCI image-layout directories (`oci-layout`, `index.json`, `blobs/<algo>/<hex>`): plain sync file I/O.

Rules kept:

- Rule 1: every write goes to a temp file in the destination directory and is renamed into place,
  so a blob path or index.json that exists is complete (readers such as skopeo, umoci and a
  concurrent lazyfly never see half a file).
- Rule 2: tags live in index.json as the `org.opencontainers.image.ref.name` annotation, one entry
  per tag, which is what skopeo's and umoci's `oci:DIR:TAG` look up.
- Rule 3: digests are validated before they become paths, so a digest can never escape `blobs/`.
- Rule 4: bytes read back are verified against their digest; a mismatch is Corrupt.

Async callers run these methods in a worker thread (`anyio.to_thread.run_sync`).
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from lazyfly.errors import AlreadyExists, Corrupt, NotFound
from lazyfly.files import write_atomically
from lazyfly.oci.manifest import (
    ANNOTATION_REF_NAME,
    OCI_INDEX,
    Descriptor,
    Index,
    Manifest,
    encode,
    parse_manifest,
    select_platform,
)
from lazyfly.oci.reference import check_digest, check_tag

LAYOUT_VERSION = "1.0.0"
_BLOCK = 1 << 20


class OciLayout:
    """One image-layout directory; `create()` a new one or `open()` an existing one."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"OciLayout({str(self.path)!r})"

    def create(self, *, exist_ok: bool = False) -> "OciLayout":
        """Write `oci-layout`, an empty index.json and `blobs/sha256/`; return self."""
        if (self.path / "oci-layout").exists():
            if not exist_ok:
                raise AlreadyExists(f"OCI layout {self.path} exists already")
            return self.open()
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        write_atomically(
            self.path / "oci-layout", json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode()
        )
        self._write_index(Index([]))
        return self

    def open(self) -> "OciLayout":
        """Check that this is an OCI layout we can read (version 1.x, a valid index.json); return self."""
        marker = self.path / "oci-layout"
        try:
            version = json.loads(marker.read_bytes()).get("imageLayoutVersion")
        except FileNotFoundError:
            raise NotFound(f"{self.path} is not an OCI image layout (no oci-layout file)") from None
        except (ValueError, AttributeError) as exc:
            raise Corrupt(f"OCI layout {self.path}: malformed oci-layout file: {exc}") from None
        if not isinstance(version, str) or not version.startswith("1."):
            raise Corrupt(f"OCI layout {self.path}: unsupported imageLayoutVersion {version!r}")
        self.index()
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        return self

    # --- blobs ---------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Return where the blob with `digest` lives (whether or not it exists)."""
        algo, _, encoded = check_digest(digest).partition(":")
        return self.path / "blobs" / algo / encoded

    def has_blob(self, digest: str) -> bool:
        """Return True if the blob is present."""
        return self.blob_path(digest).is_file()

    def write_blob(
        self, data: bytes, media_type: str, annotations: dict[str, str] | None = None
    ) -> Descriptor:
        """Store `data` as a sha256 blob and return its descriptor."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.is_file():
            write_atomically(path, data)
        return Descriptor(media_type, digest, len(data), dict(annotations or {}))

    def add_blob_file(self, src: Path, media_type: str, digest: str | None = None) -> Descriptor:
        """Move the file `src` into the blob store (hashing it unless `digest` is given)."""
        src = Path(src)
        if digest is None:
            digest = _sha256_file(src)
        size = src.stat().st_size
        path = self.blob_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, path)
        except OSError:
            # Another filesystem: copy beside the destination, then rename, then drop the source.
            fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
            try:
                with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                    shutil.copyfileobj(f, out, _BLOCK)
                os.chmod(temp, 0o644)
                os.replace(temp, path)
            finally:
                Path(temp).unlink(missing_ok=True)
            src.unlink()
        return Descriptor(media_type, digest, size)

    def read_blob(self, digest: str) -> bytes:
        """Return a blob's bytes, verified against its digest."""
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in OCI layout {self.path}") from None
        algo = digest.partition(":")[0]
        if f"{algo}:{hashlib.new(algo, data).hexdigest()}" != digest:
            raise Corrupt(f"blob {digest} in OCI layout {self.path} does not match its digest")
        return data

    # --- index and tags ------------------------------------------------------------------------

    def index(self) -> Index:
        """Return the layout's index.json."""
        try:
            data = (self.path / "index.json").read_bytes()
        except FileNotFoundError:
            raise NotFound(f"OCI layout {self.path} has no index.json") from None
        document = parse_manifest(data, OCI_INDEX)
        if not isinstance(document, Index):
            raise Corrupt(f"OCI layout {self.path}: index.json is not an image index")
        return document

    def tags(self) -> list[str]:
        """Return the tags named in index.json, in order."""
        return [
            d.annotations[ANNOTATION_REF_NAME]
            for d in self.index().manifests
            if ANNOTATION_REF_NAME in d.annotations
        ]

    def tag(self, descriptor: Descriptor, tag: str) -> Descriptor:
        """Name `descriptor` by `tag` in index.json (replacing an older entry with that tag)."""
        check_tag(tag, context=f"OCI layout {self.path}")
        tagged = dataclasses.replace(
            descriptor, annotations={**descriptor.annotations, ANNOTATION_REF_NAME: tag}
        )
        index = self.index()
        kept = [d for d in index.manifests if d.annotations.get(ANNOTATION_REF_NAME) != tag]
        self._write_index(dataclasses.replace(index, manifests=[*kept, tagged]))
        return tagged

    def add_manifest(self, descriptor: Descriptor) -> Descriptor:
        """Record `descriptor` in index.json without a tag (once per digest)."""
        index = self.index()
        if not any(d.digest == descriptor.digest for d in index.manifests):
            self._write_index(dataclasses.replace(index, manifests=[*index.manifests, descriptor]))
        return descriptor

    def resolve(self, tag: str | None = None) -> Descriptor:
        """Return the manifest descriptor named `tag`; None means the layout's only manifest."""
        manifests = self.index().manifests
        if tag is None and len(manifests) == 1:
            return manifests[0]
        for descriptor in manifests:
            if tag is not None and descriptor.annotations.get(ANNOTATION_REF_NAME) == tag:
                return descriptor
        tags = ", ".join(self.tags()) or "no tags"
        if tag is None:
            raise NotFound(f"OCI layout {self.path} holds {len(manifests)} manifests ({tags}): name a tag")
        raise NotFound(f"tag {tag!r} not found in OCI layout {self.path} (it has {tags})")

    def read_manifest(
        self, tag: str | None = None, *, platform: str = "linux/amd64"
    ) -> tuple[Manifest, bytes, Descriptor]:
        """Return (manifest, its bytes, its descriptor) for `tag`, resolving an index by `platform`."""
        descriptor = self.resolve(tag)
        data = self.read_blob(descriptor.digest)
        document = parse_manifest(data, descriptor.media_type)
        if isinstance(document, Index):
            descriptor = select_platform(document, platform)
            data = self.read_blob(descriptor.digest)
            document = parse_manifest(data, descriptor.media_type)
        if not isinstance(document, Manifest):
            raise Corrupt(f"OCI layout {self.path}: {descriptor.digest} is a nested index, not a manifest")
        return document, data, descriptor

    # --- atomic writes -------------------------------------------------------------------------

    def _write_index(self, index: Index) -> None:
        write_atomically(self.path / "index.json", encode(index))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return "sha256:" + h.hexdigest()
