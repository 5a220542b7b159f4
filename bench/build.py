"""Build and convert benchmark: lazyfly against tar|zstd and skopeo, measured side by side in one run.

Usage: .venv/bin/python bench/build.py [--size 1GiB] [--rounds 3] [--skip-rootfs] [--seed 0]

(a) build: a generated tree of --size (cached in bench/.cache/tree-SIZE) is archived with
    `tar | zstd -3 -T0` and built with `lazyfly build`; we print MB/s for both and the ratio
    lazyfly / tar|zstd (goal >= 0.7), plus the compressed sizes.
(b) convert: a Debian bookworm rootfs made once with debootstrap (bench/.cache/rootfs) becomes a
    two-layer OCI image with umoci (base system, then dist-packages with numpy and scipy), is pushed
    to a loopback docker-registry, and `lazyfly convert` is timed beside `skopeo copy` of the same
    image to a second registry (a full pull + push; a second registry so that skopeo cannot mount
    the blobs across repositories instead of copying them). Goal: under 50 s per 1.2 GB.

Every pass starts with the page cache dropped. A lazyfly command that does not exist yet is
reported as skipped, and the other measurements still run.
"""

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _harness import (
    CACHE,
    LAZYFLY,
    REPO,
    cached,
    lazyfly_has,
    mb,
    mb_per_s,
    print_table,
    timed,
    tree_bytes,
)

# The test fixtures import each other as `fixtures.*` (pytest puts tests/ on sys.path); do the same.
sys.path.insert(0, str(REPO / "tests"))
from _rootfs_image import TAG, rootfs_image
from fixtures.registry import start_registry
from fixtures.trees import make_sized_tree

from lazyfly.units import format_size, parse_size

BUILD_RATIO_GOAL = 0.7
CONVERT_GOAL_SECONDS = 50.0
CONVERT_GOAL_BYTES = 1.2e9

Row = tuple[str, str, str]


def build_part(size: int, seed: int, rounds: int) -> list[Row]:
    tree = CACHE / f"tree-{size}-seed{seed}"
    if cached(tree, lambda path: make_sized_tree(path, size, seed)):
        print(f"generated {tree} ({format_size(size)})")
    data = tree_bytes(tree)
    out = CACHE / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    archive = out / "tree.tar.zst"
    tar_times: list[float] = []
    lazy_times: list[float] = []
    try:
        # Alternate the two, `rounds` times each, and compare medians: one pass of each is at
        # the mercy of whatever else the disk did at that moment.
        for n in range(rounds):
            print(
                f"(a) build round {n + 1}/{rounds}: tar | zstd -3 -T0 of {mb(data)}, then lazyfly build ..."
            )
            archive.unlink(missing_ok=True)
            tar_times.append(timed(f"tar -C '{tree}' -cf - . | zstd -3 -T0 -q -o '{archive}'"))
            shutil.rmtree(out / "lazy", ignore_errors=True)
            lazy_s = _try_lazyfly("build", [tree, "-o", out / "lazy"])
            if lazy_s is None:
                return [("lazyfly build", "not measured", "missing or failed, see above")]
            lazy_times.append(lazy_s)
        tar_s, lazy_s = statistics.median(tar_times), statistics.median(lazy_times)
        ratio = tar_s / lazy_s  # throughput ratio: lazyfly MB/s over tar|zstd MB/s
        verdict = "ok" if ratio >= BUILD_RATIO_GOAL else "BELOW GOAL"
        return [
            ("tar|zstd -3 throughput", mb_per_s(data, tar_s), _seconds(tar_times)),
            ("tar|zstd -3 compressed size", mb(archive.stat().st_size), f"of {mb(data)}"),
            ("lazyfly build throughput", mb_per_s(data, lazy_s), _seconds(lazy_times)),
            ("lazyfly build output size", mb(tree_bytes(out / "lazy")), f"of {mb(data)}"),
            ("ratio lazyfly / tar|zstd", f"{ratio:.2f}", f"medians; goal >= {BUILD_RATIO_GOAL} ({verdict})"),
        ]
    finally:
        shutil.rmtree(out, ignore_errors=True)  # up to a GB of archives; nothing reuses them


def _seconds(times: list[float]) -> str:
    return "median of " + ", ".join(f"{t:.1f}" for t in times) + " s"


def _try_lazyfly(name: str, argv: list[str | Path]) -> float | None:
    """Time one lazyfly command; None (after printing why) when it is missing or fails."""
    if not lazyfly_has(name):
        print(f"    skipped lazyfly {name}: `lazyfly {name} --help` fails (not implemented yet)")
        return None
    print(f"    lazyfly {name} ...")
    try:
        return timed([LAZYFLY, name, *argv])
    except RuntimeError as error:
        print(f"    lazyfly {name} FAILED: {error}")
        return None


def _image_bytes(layout: Path) -> tuple[int, int]:
    """(number of layers, sum of their compressed sizes) of the image tagged TAG in `layout`."""
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].removeprefix("sha256:")
    manifest = json.loads((layout / "blobs" / "sha256" / digest).read_text())
    return len(manifest["layers"]), sum(layer["size"] for layer in manifest["layers"])


def convert_part() -> list[Row]:
    rootfs, layout = rootfs_image()
    rootfs_bytes = tree_bytes(rootfs)
    print(f"(b) convert: rootfs {rootfs} is {mb(rootfs_bytes)} ({format_size(rootfs_bytes)})")
    layers, image_bytes = _image_bytes(layout)
    rows: list[Row] = [
        ("rootfs size (uncompressed)", mb(rootfs_bytes), "debootstrap bookworm minbase + numpy/scipy/gcc"),
        ("image size (gzip layers)", mb(image_bytes), f"{layers} layers"),
    ]
    goal = CONVERT_GOAL_SECONDS * rootfs_bytes / CONVERT_GOAL_BYTES
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="registries-") as tmp, contextlib.ExitStack() as stack:
        source = start_registry(Path(tmp) / "source")
        stack.callback(source.stop)
        target = start_registry(Path(tmp) / "target")
        stack.callback(target.stop)
        src_ref = f"{source.host}/rootfs:{TAG}"
        print(f"(b) convert: pushing the image to {src_ref} ...")
        push_s = timed(
            ["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:{TAG}", f"docker://{src_ref}"]
        )
        rows.append(("push layout -> registry (setup)", f"{push_s:.1f} s", "skopeo copy oci: -> docker://"))
        print("(b) convert: skopeo copy registry -> registry ...")
        copy_s = timed(
            [
                "skopeo",
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                f"docker://{src_ref}",
                f"docker://{target.host}/rootfs:{TAG}",
            ]
        )
        rows.append(
            ("skopeo copy (pull+push)", f"{copy_s:.1f} s", mb_per_s(image_bytes, copy_s) + " compressed")
        )
        convert_s = _try_lazyfly("convert", ["--plain-http", src_ref, f"{source.host}/rootfs:{TAG}-lazy"])
        if convert_s is None:
            return [*rows, ("lazyfly convert", "not measured", "missing or failed, see above")]
        verdict = "ok" if convert_s < goal else "ABOVE GOAL"
        return [
            *rows,
            ("lazyfly convert", f"{convert_s:.1f} s", f"goal < {goal:.0f} s (50 s per 1.2 GB; {verdict})"),
            ("ratio convert / skopeo copy", f"{convert_s / copy_s:.2f}", "lower is better"),
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB", help="bytes of generated tree for the build pass")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated tree")
    parser.add_argument("--skip-rootfs", action="store_true", help="skip the debootstrap/convert part")
    parser.add_argument("--rounds", type=int, default=3, help="build passes of each tool (medians compared)")
    args = parser.parse_args()
    rows: list[Row] = [("measure", "value", "note")]
    rows += build_part(parse_size(args.size), args.seed, args.rounds)
    if not args.skip_rootfs:
        rows += convert_part()
    print_table(rows)


if __name__ == "__main__":
    main()
