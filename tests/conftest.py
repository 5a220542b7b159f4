"""Shared fixtures: a real docker-registry on loopback for the tests that need one."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.registry import RunningRegistry, start_registry


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    """A fresh docker-registry (no auth, plain HTTP) on 127.0.0.1, killed after the test."""
    running = start_registry(tmp_path)
    try:
        yield running
    finally:
        running.stop()
