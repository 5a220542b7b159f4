"""The builder's commands: build, convert, push, inspect, check (argument parsing, then calls)."""

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lazyfly.units import format_size, parse_size

if TYPE_CHECKING:
    from lazyfly.builder.build import FormatOptions

# Each command imports what it needs when it runs: importing every command's libraries (httpx,
# rich, zstandard, ...) up front would cost every invocation a few hundred milliseconds.

_IMAGE_HELP = (
    "IMAGE is an OCI layout directory, oci:PATH[:TAG], "
    "or a registry reference HOST[:PORT]/REPO[:TAG|@DIGEST]."
)


def _format_options(func):  # type: ignore[no-untyped-def]
    options = [
        click.option("--chunk-size", default="1MiB", show_default=True,
                     help="Chunk size: a power of two from 4KiB to 16MiB."),
        click.option("--compressor", type=click.Choice(["zstd", "lz4", "none"]), default="zstd",
                     show_default=True, help="Per-chunk compression (raw when it does not pay)."),
        click.option("--prefetch-list", type=click.Path(dir_okay=False, path_type=Path),
                     help="File of absolute paths to prefetch first, one per line, optionally "
                          "with the byte ranges to prefetch (as `lazyfly accessed` writes it)."),
        click.option("--chunk-dict", metavar="IMAGE",
                     help="A lazyfly image whose chunks are reused instead of stored again."),
        click.option("--plain-http", is_flag=True, help="Talk HTTP, not HTTPS, to registries."),
        click.option("--platform", default="linux/amd64", show_default=True,
                     help="Platform to pick from a multi-platform image."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def _make_options(
    stack: contextlib.ExitStack,
    chunk_size: str,
    compressor: str,
    prefetch_list: Path | None,
    chunk_dict: str | None,
    plain_http: bool,
    platform: str,
    tag: str = "latest",
) -> "FormatOptions":
    from lazyfly.builder.build import FormatOptions, read_prefetch_list
    from lazyfly.builder.dedup import load_chunk_dictionary
    from lazyfly.compression import Compressor
    from lazyfly.oci.locate import locate_image

    dictionary = (
        load_chunk_dictionary(locate_image(chunk_dict), stack, plain_http=plain_http, platform=platform)
        if chunk_dict
        else {}
    )
    return FormatOptions(
        chunk_size=parse_size(chunk_size),
        compressor=Compressor.from_name(compressor),
        prefetch=read_prefetch_list(prefetch_list) if prefetch_list else (),
        chunk_dictionary=dictionary,
        tag=tag,
    )


def _summary(result) -> str:  # type: ignore[no-untyped-def]
    s = result.stats
    return (
        f"{result.inode_count} inodes, {result.blob_count} blobs, {s.chunks} chunks: {s.stored} stored, "
        f"{s.deduplicated} deduplicated, {s.holes} holes; {format_size(s.bytes_in)} in, "
        f"{format_size(s.bytes_stored)} stored, bootstrap {format_size(result.bootstrap_size)}"
    )


@click.command(epilog="SRC is a directory, a .tar, or a .tar.gz/.tgz file.")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    "outdir",
    required=True,
    type=click.Path(path_type=Path),
    help="Output directory, written as an OCI image layout (replaced if it exists).",
)
@click.option("--tag", default="latest", show_default=True, help="Tag of the image in the layout.")
@_format_options
def build(src: Path, outdir: Path, tag: str, **fmt_args: object) -> None:
    """Build a lazyfly image from a directory or tarball into an OCI layout."""  # fmt: skip
    from lazyfly.builder.build import build_layers, source_layer
    from lazyfly.progress import RichProgress

    with contextlib.ExitStack() as stack:
        options = _make_options(stack, tag=tag, **fmt_args)  # type: ignore[arg-type]
        with RichProgress(f"building {src}") as progress:
            result = build_layers([source_layer(src)], outdir, options, progress=progress)
    click.echo(f"built {outdir} ({tag}) {result.manifest.digest}: {_summary(result)}")


@click.command(epilog=_IMAGE_HELP)
@click.argument("src_image")
@click.argument("dst_image")
@_format_options
def convert(src_image: str, dst_image: str, **fmt_args: object) -> None:
    """Convert an OCI/Docker image into a lazyfly image and push it to DST_IMAGE."""
    from lazyfly.builder.convert import convert_image
    from lazyfly.oci.locate import locate_image
    from lazyfly.progress import RichProgress

    source, destination = locate_image(src_image), locate_image(dst_image)
    with contextlib.ExitStack() as stack:
        options = _make_options(stack, **fmt_args)  # type: ignore[arg-type]
        with (
            RichProgress(f"pulling {src_image}") as pulling,
            RichProgress("chunking") as chunking,
            RichProgress(f"pushing {dst_image}") as pushing,
        ):
            result = convert_image(
                source,
                destination,
                options,
                platform=str(fmt_args["platform"]),
                plain_http=bool(fmt_args["plain_http"]),
                pull_progress=pulling,
                build_progress=chunking,
                push_progress=pushing,
            )
    click.echo(
        f"converted {src_image} -> {result.destination} {result.manifest_digest}: {_summary(result.build)}"
    )


@click.command(epilog="OUTDIR is an OCI layout (or oci:PATH:TAG); IMAGE a registry reference.")
@click.argument("outdir")
@click.argument("image")
@click.option("--plain-http", is_flag=True, help="Talk HTTP, not HTTPS, to the registry.")
def push(outdir: str, image: str, plain_http: bool) -> None:
    """Push an image from an OCI layout directory to a registry."""
    import anyio

    from lazyfly.builder.errors import SourceError
    from lazyfly.oci.layout import OciLayout
    from lazyfly.oci.locate import locate_image
    from lazyfly.oci.reference import OciLayoutRef, RegistryRef
    from lazyfly.oci.transfer import push_image
    from lazyfly.progress import RichProgress

    source = locate_image(outdir)
    dest = locate_image(image)
    if not isinstance(dest, RegistryRef):
        raise SourceError(f"{image} is not a registry reference")
    if isinstance(source, OciLayoutRef):
        layout, tag = OciLayout(source.path).open(), source.tag
    elif isinstance(source, Path):
        layout, tag = OciLayout(source).open(), None
    else:
        raise SourceError(f"{outdir} is not an OCI layout directory")
    with RichProgress(f"pushing {image}") as progress:
        digest = anyio.run(lambda: push_image(layout, tag, dest, plain_http=plain_http, progress=progress))
    click.echo(f"pushed {image}@{digest}")


@click.command(epilog=_IMAGE_HELP)
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON document.")
@click.option("--tree/--no-tree", default=True, show_default=True, help="List every entry of the image.")
@click.option("--plain-http", is_flag=True, help="Talk HTTP, not HTTPS, to the registry.")
@click.option("--platform", default="linux/amd64", show_default=True)
def inspect(image: str, as_json: bool, tree: bool, plain_http: bool, platform: str) -> None:
    """Show a lazyfly image: summary, blobs, chunk and dedup figures, and its tree."""
    import anyio

    from lazyfly.builder.inspect import describe
    from lazyfly.format.bootstrap_reader import Bootstrap
    from lazyfly.lazy_image import fetch_lazy_metadata
    from lazyfly.oci.locate import locate_image

    location = locate_image(image)
    meta = anyio.run(lambda: fetch_lazy_metadata(location, plain_http=plain_http, platform=platform))
    info = describe(meta.manifest, meta.descriptor, Bootstrap(meta.bootstrap), len(meta.bootstrap))
    if not tree:
        info.pop("tree")
    if as_json:
        json.dump(info, sys.stdout, indent=2)
        click.echo()
        return
    c = info["chunks"]
    click.echo(f"image     {image}\nmanifest  {info['manifest']}")
    click.echo(f"layers    {info['layers']} ({len(info['blobs'])} data blobs + bootstrap)")
    click.echo(f"chunks    size {format_size(info['chunk_size'])}, {c['references']} references, "
               f"{c['unique']} unique, {c['deduplicated_references']} deduplicated")  # fmt: skip
    click.echo(f"data      {format_size(c['file_bytes'])} in files, {format_size(c['hole_bytes'])} holes, "
               f"{format_size(c['stored_bytes'])} stored (ratio {c['compression_ratio']})")  # fmt: skip
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(info["kinds"].items()))
    click.echo(f"inodes    {info['inodes']}: {kinds}\nbootstrap {format_size(info['bootstrap_size'])}")
    for b in info["blobs"]:
        click.echo(f"blob      {b['digest']} {format_size(b['compressed_size'])} "
                   f"({format_size(b['uncompressed_size'])} uncompressed, {b['chunks']} chunks"
                   f"{', the prefetch blob' if b['prefetch'] else ''})")  # fmt: skip
    for e in info.get("tree", []):
        extra = f" -> {e['target']}" if "target" in e else ""
        click.echo(f"{e['mode']} {e['uid']:>6} {e['gid']:>6} {e['size']:>12} {e['path']}{extra}")


@click.command(epilog=_IMAGE_HELP + " --source is a directory, a tarball or an image.")
@click.argument("image")
@click.option("--source", help="Compare the whole tree with this directory, tarball or image.")
@click.option("--plain-http", is_flag=True, help="Talk HTTP, not HTTPS, to registries.")
@click.option("--platform", default="linux/amd64", show_default=True)
def check(image: str, source: str | None, plain_http: bool, platform: str) -> None:
    """Verify a lazyfly image (manifest, bootstrap, every chunk) and optionally its source."""
    from lazyfly.builder.check import CheckReport, check_image
    from lazyfly.builder.image_source import as_lazy_image, open_local_image
    from lazyfly.builder.source_compare import compare_with_source, read_source_tree
    from lazyfly.oci.locate import locate_image
    from lazyfly.progress import RichProgress

    report = CheckReport()
    with (
        RichProgress(f"pulling {image}") as progress,
        open_local_image(
            locate_image(image), plain_http=plain_http, platform=platform, progress=progress
        ) as local,
    ):
        lazy = as_lazy_image(local)
        check_image(lazy, report)
        if source is not None:
            tree = read_source_tree(locate_image(source), plain_http=plain_http, platform=platform)
            compare_with_source(lazy, tree, report)
    if report.ok:
        compared = f", {report.files_compared} files compared with the source" if source else ""
        click.echo(f"check: OK: {report.inodes} entries, {report.chunks_verified} chunks verified{compared}")
        return
    click.echo(f"check: {len(report.problems)} problem(s) in {image}:", err=True)
    for problem in report.problems:
        click.echo(f"  - {problem}", err=True)
    sys.exit(1)


COMMANDS = [build, convert, push, inspect, check]
