"""Benchmark harness: the cache under bench/.cache, cold-cache timing, sizes and the result table.

Rules kept: a cached artefact counts only once its marker file exists (the marker is written after
the artefact is complete, so an interrupted run rebuilds it); every timed pass starts with the page
cache dropped, so each side of a ratio reads from disk.
"""

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "bench" / ".cache"
LAZYFLY = REPO / ".venv" / "bin" / "lazyfly"


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) that live process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drop_caches() -> bool:
    """Flush dirty pages and drop the page cache; False (and a warning) when the kernel refuses."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as error:
        print(f"  warning: cannot drop page cache ({error}); timings include warm reads")
        return False
    return True


def timed(cmd: list[str | Path] | str) -> float:
    """Run `cmd` (a string runs in bash with pipefail) after dropping caches; return seconds taken."""
    argv = ["bash", "-o", "pipefail", "-c", cmd] if isinstance(cmd, str) else [str(c) for c in cmd]
    drop_caches()
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return elapsed


def tree_bytes(root: Path) -> int:
    """Sum of the apparent sizes of regular files under `root` (symlinks are not followed)."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            info = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def lazyfly_has(subcommand: str) -> bool:
    """True when `lazyfly SUBCOMMAND --help` works, i.e. that part of the CLI exists yet."""
    if not LAZYFLY.exists():
        return False
    return subprocess.run([LAZYFLY, subcommand, "--help"], capture_output=True).returncode == 0


def cached(target: Path, make: Callable[[Path], None]) -> bool:
    """Ensure `target` exists, made by `make(target)` unless its marker says so; True if it was made."""
    marker = target.with_name(target.name + ".ok")
    if marker.exists() and target.exists():
        return False
    if target.is_dir():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    make(target)
    marker.write_text("complete\n")
    return True


def mb_per_s(n_bytes: int, seconds: float) -> str:
    return f"{n_bytes / 1e6 / seconds:.1f} MB/s"


def mb(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


def print_table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print()
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))
