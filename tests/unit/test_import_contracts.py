"""The layering rules of STYLE.md, checked on the source: roles never import each other, the core
never imports a role (except the top-level CLI), and codecs do no I/O."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROLES = ["builder", "fusefs", "p2p", "scheduler", "manager", "snapshotter"]
CORE_TOP_LAYER = {"lazyfly/cli.py"}
CODECS = [
    "lazyfly/format",
    "lazyfly/oci/reference.py",
    "lazyfly/oci/manifest.py",
    "lazyfly/backend/byte_range.py",
    "fusefs/fuse_wire.py",
    "snapshotter/filters.py",
    "snapshotter/mounts.py",
    "snapshotter/labels.py",
    "p2p/task/task_id.py",
    "p2p/task/pieces.py",
    "p2p/vortex/codec.py",
    "p2p/vortex/messages.py",
    "p2p/proxy/headers.py",
    "p2p/storage/eviction.py",
    "scheduler/dag.py",
    "scheduler/evaluator.py",
    "scheduler/peer_state.py",
    "scheduler/cluster_state.py",
]
IO_MODULES = {"trio", "anyio", "asyncio", "socket", "grpc", "httpx", "rocksdict"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _files(where: str) -> list[Path]:
    base = ROOT / where
    return [base] if base.is_file() else sorted(base.rglob("*.py"))


@pytest.mark.parametrize("role", ROLES)
def test_a_role_imports_no_other_role(role: str):
    others = {f"lazyfly.{r}" for r in ROLES if r != role} | set(ROLES)
    for path in _files(role):
        bad = {m for m in _imports(path) if m.split(".")[0] in others or ".".join(m.split(".")[:2]) in others}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_core_imports_no_role():
    roles = {f"lazyfly.{r}" for r in ROLES}
    for path in _files("lazyfly"):
        if str(path.relative_to(ROOT)) in CORE_TOP_LAYER:
            continue
        bad = {m for m in _imports(path) if ".".join(m.split(".")[:2]) in roles}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("codec", CODECS)
def test_codecs_do_no_io(codec: str):
    for path in _files(codec):
        bad = {m for m in _imports(path) if m.split(".")[0] in IO_MODULES}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_no_source_file_passes_800_lines():
    for where in ["lazyfly", *ROLES]:
        for path in _files(where):
            assert len(path.read_text().splitlines()) <= 800, f"{path.relative_to(ROOT)} is too long"
