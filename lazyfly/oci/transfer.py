"""Copy whole images between a registry or an OCI layout and a local OCI layout (used by the builder).

Rules kept:

- Rule 1: blobs first, the manifest last. A pulled layout only names a manifest once its config
  and layers are in place and verified; a registry only gets a manifest once it has its blobs.
- Rule 2: at most `BLOB_CONCURRENCY` blobs move at once, in one task group owned by the call.
- Rule 3: an index is resolved to one platform on pull; on push every child manifest of an index
  goes up (by digest) before the index itself.
- Rule 4: blobs the destination has already are skipped, but still counted as progress, so a
  bar reaches its end.

File work runs in worker threads; network work runs on the caller's event loop (trio or asyncio).
"""

import hashlib
import tempfile
from pathlib import Path

import anyio

from lazyfly.errors import Corrupt, InvalidArgument, NotFound
from lazyfly.oci.auth import RegistryAuth
from lazyfly.oci.layout import OciLayout
from lazyfly.oci.manifest import Descriptor, Index, Manifest, parse_manifest
from lazyfly.oci.reference import OciLayoutRef, RegistryRef
from lazyfly.oci.registry import RegistryClient
from lazyfly.progress import NullProgress, ProgressSink

BLOB_CONCURRENCY = 4
_BLOCK = 1 << 20


async def pull_image(
    location: RegistryRef | OciLayoutRef,
    dest: OciLayout,
    *,
    platform: str = "linux/amd64",
    plain_http: bool = False,
    progress: ProgressSink | None = None,
) -> Descriptor:
    """Copy one platform's manifest, config and layers into `dest`; return the manifest descriptor.

    The manifest is recorded in dest's index.json under the source's tag (untagged if it has none).
    """
    sink = progress or NullProgress()
    if isinstance(location, OciLayoutRef):
        return await anyio.to_thread.run_sync(_copy_from_layout, location, dest, platform, sink)
    auth = await anyio.to_thread.run_sync(RegistryAuth.from_docker_config, location.registry)
    repo = location.repository
    async with RegistryClient(location.registry, plain_http=plain_http, auth=auth) as client:
        document, manifest_desc, data = await client.get_image_manifest(repo, location.reference, platform)
        digest = manifest_desc.digest
        missing = _unique([document.config, *document.layers])
        missing = [b for b in missing if not await anyio.to_thread.run_sync(dest.has_blob, b.digest)]
        sink.add_total(sum(b.size for b in missing))
        limiter = anyio.CapacityLimiter(BLOB_CONCURRENCY)

        async def fetch(blob: Descriptor) -> None:
            async with limiter:
                await client.download_blob(
                    repo, blob.digest, dest.blob_path(blob.digest), sink.advance, size=blob.size
                )

        async with anyio.create_task_group() as tg:
            for blob in missing:
                tg.start_soon(fetch, blob)
    descriptor = await anyio.to_thread.run_sync(dest.write_blob, data, document.media_type)
    if descriptor.digest != digest:
        raise Corrupt(f"{location}: stored manifest digest {descriptor.digest} differs from fetched {digest}")
    return await anyio.to_thread.run_sync(_record, dest, descriptor, location.tag)


async def push_image(
    src: OciLayout,
    tag: str | None,
    dest: RegistryRef,
    *,
    plain_http: bool = False,
    progress: ProgressSink | None = None,
) -> str:
    """Upload the image `tag` of `src` (blobs, then manifests) to `dest`; return the manifest digest."""
    sink = progress or NullProgress()
    top = await anyio.to_thread.run_sync(src.resolve, tag)
    if dest.digest and dest.digest != top.digest:
        raise InvalidArgument(
            f"{src.path} tag {tag} has digest {top.digest}, not the {dest.digest} named in {dest}"
        )
    data = await anyio.to_thread.run_sync(src.read_blob, top.digest)
    document = parse_manifest(data, top.media_type)
    children: list[tuple[Descriptor, bytes, Manifest]] = []
    if isinstance(document, Index):
        for child in document.manifests:
            child_data = await anyio.to_thread.run_sync(src.read_blob, child.digest)
            child_doc = parse_manifest(child_data, child.media_type)
            if not isinstance(child_doc, Manifest):
                raise InvalidArgument(f"{src.path}: nested index {child.digest} cannot be pushed")
            children.append((child, child_data, child_doc))
    else:
        children.append((top, data, document))
    blobs = _unique([b for _, _, m in children for b in (m.config, *m.layers)])
    sink.add_total(sum(b.size for b in blobs))
    auth = await anyio.to_thread.run_sync(RegistryAuth.from_docker_config, dest.registry)
    repo = dest.repository
    async with RegistryClient(dest.registry, plain_http=plain_http, auth=auth) as client:
        limiter = anyio.CapacityLimiter(BLOB_CONCURRENCY)

        async def upload(blob: Descriptor) -> None:
            async with limiter:
                await client.push_blob(repo, blob.digest, blob.size, src.blob_path(blob.digest), sink.advance)

        async with anyio.create_task_group() as tg:
            for blob in blobs:
                tg.start_soon(upload, blob)
        if isinstance(document, Index):
            for child, child_data, child_doc in children:
                await client.push_manifest(repo, child.digest, child_data, child_doc.media_type)
        return await client.push_manifest(repo, dest.reference, data, document.media_type)


def _unique(blobs: list[Descriptor]) -> list[Descriptor]:
    seen: dict[str, Descriptor] = {}
    for blob in blobs:
        seen.setdefault(blob.digest, blob)
    return list(seen.values())


def _record(dest: OciLayout, descriptor: Descriptor, tag: str | None) -> Descriptor:
    return dest.tag(descriptor, tag) if tag else dest.add_manifest(descriptor)


def _copy_from_layout(
    location: OciLayoutRef, dest: OciLayout, platform: str, sink: ProgressSink
) -> Descriptor:
    """Copy an image between two layouts, verifying each blob as it streams (runs in a thread)."""
    src = OciLayout(location.path).open()
    manifest, data, _ = src.read_manifest(location.tag, platform=platform)
    missing = [b for b in _unique([manifest.config, *manifest.layers]) if not dest.has_blob(b.digest)]
    sink.add_total(sum(b.size for b in missing))
    for blob in missing:
        _copy_blob(src.blob_path(blob.digest), dest, blob, sink)
    stored = dest.write_blob(data, manifest.media_type)
    return _record(dest, stored, location.tag)


def _copy_blob(source: Path, dest: OciLayout, blob: Descriptor, sink: ProgressSink) -> None:
    algo = blob.digest.partition(":")[0]
    hasher = hashlib.new(algo)
    target = dest.blob_path(blob.digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".incoming-", delete=False) as out:
        temp = Path(out.name)
        try:
            if not source.is_file():
                raise NotFound(f"blob {blob.digest} is missing from OCI layout {source.parent.parent.parent}")
            with open(source, "rb") as f:
                while block := f.read(_BLOCK):
                    hasher.update(block)
                    out.write(block)
                    sink.advance(len(block))
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    if f"{algo}:{hasher.hexdigest()}" != blob.digest:
        temp.unlink(missing_ok=True)
        raise Corrupt(
            f"blob {blob.digest} in OCI layout {source.parent.parent.parent} does not match its digest"
        )
    temp.chmod(0o644)  # NamedTemporaryFile makes 0600; layouts are read by other tools and users
    dest.add_blob_file(temp, blob.media_type, blob.digest)
