"""Run the real `lazyfly` command line in a subprocess, as a user would."""

import subprocess
import sys
from pathlib import Path

LAZYFLY = Path(sys.executable).with_name("lazyfly")


def lazyfly(*args: object, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `lazyfly ARGS`; with `check`, fail the test with its output when it exits non-zero."""
    proc = subprocess.run([str(LAZYFLY), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"lazyfly {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc
