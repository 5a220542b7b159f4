"""FUSE read benchmark: lazyfly mounts against the native disk and a plain blob download, in one run.

Usage: .venv/bin/python bench/fuse_read.py [--big 1GiB] [--set-files 4] [--set-size 256MiB]
       [--rounds 5] [--random-reads 10000] [--seed 0]

Data (cached in bench/.cache/fuse-data): one --big file, and a set of --set-files files of
--set-size, all pseudo-random bytes so that a blob is about the size of its files. Each becomes an
image (`lazyfly build`, `big` and `set`), pushed to a loopback docker-registry.

(a) cold: `dd bs=1M` of the big file through a fresh mount (empty chunk cache, `--prefetch none`)
    from the registry, against `curl -o /dev/null` of the image's data blob from the same registry;
    ratio of throughputs, goal >= 0.7. Rounds alternate the two; medians are compared. A third
    side is the reference: the same blob downloaded with the work a verifying cache cannot skip
    (blake3 of every MiB and a write to a cache file, in two threads) and nothing else, no FUSE;
    its ratio to curl bounds what any verified, cached cold read can reach on the machine.
(b) warm: the chunk cache holds every chunk. Sequential `dd bs=1M` of the big file and of the set
    through the mount against the same files on the native disk (goal >= 0.9x), then random 4 KiB
    preads of the big file, IOPS and p50/p99 latency on both (goal: p99 under 1 ms through the mount).

Both parts also print CPU seconds per GiB (user and system time of the daemon, and in the cold
part of the registry, for the mount's range requests and for curl), which this machine's noise
moves less than wall times.

Every pass starts with the page cache dropped, so both sides of a ratio read from disk. Mounts are
always unmounted and the registry stopped, even when a pass fails.
"""

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _fuse_harness import (
    Mount,
    data_blobs,
    hashed_and_stored_download,
    lazyfly_run,
    mounted,
    random_reads,
    write_random_file,
)
from _harness import CACHE, REPO, cached, mb, mb_per_s, print_table, process_cpu_seconds, timed, tree_bytes

sys.path.insert(0, str(REPO / "tests"))
from fixtures.registry import RunningRegistry, start_registry

from lazyfly.units import format_size, parse_size

COLD_RATIO_GOAL = 0.7
WARM_RATIO_GOAL = 0.9
P99_GOAL_S = 1e-3
BLOCK = 4096
GiB = 1 << 30
TAG = "v1"

Row = tuple[str, str, str]


def _dd(paths: list[Path]) -> str:
    """A bash command reading `paths` one after the other with 1 MiB reads, like `dd bs=1M`."""
    return "; ".join(f"dd if='{p}' of=/dev/null bs=1M status=none" for p in paths)


def _seconds(times: list[float]) -> str:
    return "median of " + ", ".join(f"{t:.2f}" for t in times) + " s"


def _make_data(root: Path, big: int, set_files: int, set_size: int, seed: int) -> None:
    print(f"generating {format_size(big)} + {set_files} x {format_size(set_size)} of random bytes ...")
    write_random_file(root / "big" / "big.bin", big, seed)
    for n in range(set_files):
        write_random_file(root / "set" / f"part-{n}.bin", set_size, seed + 1 + n)


def _ratio_row(label: str, ratio: float, goal: float) -> Row:
    verdict = "ok" if ratio >= goal else "BELOW GOAL"
    return (label, f"{ratio:.2f}", f"medians; goal >= {goal} ({verdict})")


def _cpu_per_gib(seconds: list[float], size: int) -> float:
    return statistics.median(seconds) * GiB / size


def cold_part(registry: RunningRegistry, big: Path, work: Path, rounds: int) -> list[Row]:
    blobs = data_blobs(registry.url, "big", TAG)
    if len(blobs) != 1:
        raise RuntimeError(f"expected one data blob in big:{TAG}, found {len(blobs)}")
    blob = blobs[0]
    size = big.stat().st_size
    curl_times: list[float] = []
    mount_times: list[float] = []
    reference_times: list[float] = []
    mount_setup: list[float] = []
    cpu: dict[str, list[float]] = {
        "registry for curl": [],
        "registry for the mount": [],
        "daemon": [],
        "reference": [],
    }
    for n in range(rounds):
        print(
            f"(a) cold round {n + 1}/{rounds}: curl of the {mb(blob.size)} blob, reference, fresh mount ..."
        )
        before = process_cpu_seconds(registry.pid)
        curl_times.append(timed(["curl", "-sSfL", "-o", "/dev/null", blob.url]))
        cpu["registry for curl"].append(process_cpu_seconds(registry.pid) - before)
        before = process_cpu_seconds(os.getpid())
        reference_times.append(hashed_and_stored_download(blob.url, work / "reference-download"))
        cpu["reference"].append(process_cpu_seconds(os.getpid()) - before)
        (work / "reference-download").unlink()
        cache = work / f"cold-cache-{n}"
        image = f"{registry.host}/big:{TAG}"
        with mounted(image, work / "mnt-cold", cache, "--plain-http", "--prefetch", "none") as mount:
            mount_setup.append(mount.seconds)
            before, daemon_before = process_cpu_seconds(registry.pid), process_cpu_seconds(mount.daemon_pid)
            mount_times.append(timed(_dd([mount.point / big.name])))
            cpu["daemon"].append(process_cpu_seconds(mount.daemon_pid) - daemon_before)
            cpu["registry for the mount"].append(process_cpu_seconds(registry.pid) - before)
    curl_s, mount_s = statistics.median(curl_times), statistics.median(mount_times)
    reference_s = statistics.median(reference_times)
    per_gib = {name: _cpu_per_gib(seconds, size) for name, seconds in cpu.items()}
    return [
        ("cold: curl of the data blob", mb_per_s(blob.size, curl_s), _seconds(curl_times)),
        (
            "cold: reference (blake3 + store, no FUSE)",
            mb_per_s(blob.size, reference_s),
            _seconds(reference_times),
        ),
        ("cold: dd of the file via fresh mount", mb_per_s(size, mount_s), _seconds(mount_times)),
        ("cold: mount command (not in the above)", f"{statistics.median(mount_setup):.2f} s", "median"),
        _ratio_row("cold ratio mount / curl", (size / mount_s) / (blob.size / curl_s), COLD_RATIO_GOAL),
        (
            "cold ratio reference / curl",
            f"{curl_s / reference_s:.2f}",
            f"the most a verified, cached read reaches here (mount / reference: {reference_s / mount_s:.2f})",
        ),
        (
            "cold: CPU per GiB, daemon",
            f"{per_gib['daemon']:.2f} s",
            f"registry {per_gib['registry for the mount']:.2f} s "
            f"(for curl {per_gib['registry for curl']:.2f} s); reference {per_gib['reference']:.2f} s",
        ),
    ]


def _sequential(
    label: str, native: list[Path], mount: Mount, mounted_paths: list[Path], rounds: int
) -> list[Row]:
    data = sum(p.stat().st_size for p in native)
    native_times: list[float] = []
    mount_times: list[float] = []
    daemon_cpu: list[float] = []
    for n in range(rounds):
        print(f"(b) warm {label} round {n + 1}/{rounds}: dd native, then dd through the mount ...")
        native_times.append(timed(_dd(native)))
        before = process_cpu_seconds(mount.daemon_pid)
        mount_times.append(timed(_dd(mounted_paths)))
        daemon_cpu.append(process_cpu_seconds(mount.daemon_pid) - before)
    native_s, mount_s = statistics.median(native_times), statistics.median(mount_times)
    return [
        (f"warm {label}: native dd", mb_per_s(data, native_s), _seconds(native_times)),
        (f"warm {label}: dd via mount", mb_per_s(data, mount_s), _seconds(mount_times)),
        _ratio_row(f"warm {label} ratio mount / native", native_s / mount_s, WARM_RATIO_GOAL),
        (f"warm {label}: daemon CPU per GiB", f"{_cpu_per_gib(daemon_cpu, data):.2f} s", "median"),
    ]


def _random(native: Path, through_mount: Path, count: int, rounds: int, seed: int) -> list[Row]:
    results = {}
    for name, path in (("native", native), ("mount", through_mount)):
        print(f"(b) warm random {format_size(BLOCK)} reads ({name}): {rounds} x {count} preads ...")
        passes = [random_reads(path, count, BLOCK, seed + n) for n in range(rounds)]
        merged = passes[0]
        for other in passes[1:]:
            merged = merged.merged(other)
        results[name] = merged
    rows: list[Row] = []
    for name, result in results.items():
        p50, p99 = result.percentile(0.50), result.percentile(0.99)
        note = f"p50 {p50 * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us"
        if name == "mount":
            note += f" (goal p99 < 1 ms: {'ok' if p99 < P99_GOAL_S else 'ABOVE GOAL'})"
        rows.append((f"warm random 4 KiB: {name}", f"{result.iops:.0f} IOPS", note))
    return rows


def warm_part(
    host: str, data: Path, big_cache: Path, work: Path, rounds: int, count: int, seed: int
) -> list[Row]:
    big = data / "big" / "big.bin"
    parts = sorted((data / "set").iterdir())
    set_cache = work / "set-cache"
    with contextlib.ExitStack() as stack:
        big_mount = stack.enter_context(
            mounted(f"{host}/big:{TAG}", work / "mnt-big", big_cache, "--plain-http", "--prefetch", "none")
        )
        set_mount = stack.enter_context(
            mounted(f"{host}/set:{TAG}", work / "mnt-set", set_cache, "--plain-http", "--prefetch", "none")
        )
        big_point, set_point = big_mount.point, set_mount.point
        print("(b) warm: filling the chunk caches (one read of every file through the mounts) ...")
        fill_s = timed(_dd([big_point / big.name] + [set_point / p.name for p in parts]))
        fill_bytes = big.stat().st_size + sum(p.stat().st_size for p in parts)
        rows: list[Row] = [("warm: cache fill (setup)", mb_per_s(fill_bytes, fill_s), f"{fill_s:.1f} s")]
        big_label = f"{format_size(big.stat().st_size)} file"
        rows += _sequential(big_label, [big], big_mount, [big_point / big.name], rounds)
        set_label = f"{len(parts)}-file set"
        rows += _sequential(set_label, parts, set_mount, [set_point / p.name for p in parts], rounds)
        rows += _random(big, big_point / big.name, count, rounds, seed)
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", default="1GiB", help="size of the single big file")
    parser.add_argument("--set-files", type=int, default=4, help="number of files in the set")
    parser.add_argument("--set-size", default="256MiB", help="size of each file of the set")
    parser.add_argument("--rounds", type=int, default=5, help="passes of each side (medians compared)")
    parser.add_argument("--random-reads", type=int, default=10000, help="random 4 KiB reads per pass")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of the random offsets")
    args = parser.parse_args()
    big_size, set_size = parse_size(args.big), parse_size(args.set_size)
    data = CACHE / f"fuse-data-{big_size}-{args.set_files}x{set_size}-seed{args.seed}"
    if cached(data, lambda path: _make_data(path, big_size, args.set_files, set_size, args.seed)):
        print(f"generated {data}")
    rows: list[Row] = [("measure", "value", "note")]
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="fuse-read-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        registry = start_registry(work / "registry")
        stack.callback(registry.stop)
        for name in ("big", "set"):
            print(f"building and pushing the `{name}` image ({mb(tree_bytes(data / name))}) ...")
            lazyfly_run("build", data / name, "-o", work / f"layout-{name}")
            lazyfly_run("push", work / f"layout-{name}", f"{registry.host}/{name}:{TAG}", "--plain-http")
        try:
            rows += cold_part(registry, data / "big" / "big.bin", work, args.rounds)
        except RuntimeError as error:
            print(f"(a) cold FAILED: {error}")
            rows.append(("cold part", "not measured", "failed, see above"))
        big_cache = work / f"cold-cache-{args.rounds - 1}"  # the last cold round read every chunk
        try:
            rows += warm_part(registry.host, data, big_cache, work, args.rounds, args.random_reads, args.seed)
        except RuntimeError as error:
            print(f"(b) warm FAILED: {error}")
            rows.append(("warm part", "not measured", "failed, see above"))
    print_table(rows)


if __name__ == "__main__":
    main()
