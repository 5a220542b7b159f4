"""Stopping the child processes a test, a benchmark or `make run` started."""

import signal
import subprocess
import time
from collections.abc import Iterable


def stop_processes(processes: Iterable[subprocess.Popen], timeout: float) -> None:
    """SIGTERM every process still running, then SIGKILL those not gone within `timeout` seconds
    (one deadline for all of them); every process is reaped."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
