"""Convert an OCI or Docker image (registry or OCI layout) into a lazyfly image and push it.

The source is pulled into a temporary layout (digests verified), each tar layer becomes one data
blob with whiteouts applied at the merge, the source config is kept with new diff_ids, and the
source manifest becomes the new manifest's `subject`. A registry destination receives blobs first
and the manifest last; an `oci:` destination is written atomically.
"""

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import anyio

from lazyfly.builder.build import BuildResult, FormatOptions, build_layers
from lazyfly.builder.errors import SourceError
from lazyfly.builder.image_source import open_local_image
from lazyfly.builder.tar_source import read_tar_file
from lazyfly.format import oci_image as fmt
from lazyfly.oci.layout import OciLayout
from lazyfly.oci.locate import ImageLocation
from lazyfly.oci.manifest import layer_compression
from lazyfly.oci.reference import OciLayoutRef, RegistryRef
from lazyfly.oci.transfer import push_image
from lazyfly.progress import ProgressSink


@dataclass
class ConvertResult:
    """The build's figures and where the image went."""

    build: BuildResult
    destination: str
    manifest_digest: str


def convert_image(
    source: ImageLocation,
    destination: ImageLocation,
    options: FormatOptions,
    *,
    platform: str = "linux/amd64",
    plain_http: bool = False,
    pull_progress: ProgressSink | None = None,
    build_progress: ProgressSink | None = None,
    push_progress: ProgressSink | None = None,
) -> ConvertResult:
    """Convert `source` into a lazyfly image at `destination`."""
    if isinstance(destination, Path):
        raise SourceError(f"destination {destination} exists; use oci:PATH[:TAG] or a registry reference")
    with open_local_image(source, plain_http=plain_http, platform=platform, progress=pull_progress) as image:
        if any(layer.annotations.get(fmt.ANNOTATION_BOOTSTRAP) for layer in image.manifest.layers):
            raise SourceError(f"{source} is already a lazyfly image")
        readers = []
        for layer in image.manifest.layers:
            layer_compression(layer.media_type)  # refuses foreign and non-tar layers by name
            path = image.layout.blob_path(layer.digest)
            readers.append(lambda sink, path=path: read_tar_file(path, sink, whiteouts=True))
        tag = destination.tag or "latest"
        opts = replace(options, tag=tag)
        kwargs = dict(
            base_config=image.config,
            subject=replace(image.descriptor, annotations={}),
            source_layers=[layer.digest for layer in image.manifest.layers],
            progress=build_progress,
        )
        if isinstance(destination, OciLayoutRef):
            result = build_layers(readers, destination.path, opts, **kwargs)
            return ConvertResult(result, f"oci:{destination.path}:{tag}", result.manifest.digest)
        assert isinstance(destination, RegistryRef)
        out = Path(tempfile.mkdtemp(prefix="lazyfly-convert-"))
        try:
            result = build_layers(readers, out / "image", opts, **kwargs)
            digest = anyio.run(
                lambda: push_image(
                    OciLayout(out / "image").open(),
                    tag,
                    destination,
                    plain_http=plain_http,
                    progress=push_progress,
                )
            )
        finally:
            shutil.rmtree(out, ignore_errors=True)
        return ConvertResult(result, str(destination), digest)
