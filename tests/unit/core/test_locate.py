from pathlib import Path

import pytest

from lazyfly.errors import InvalidArgument
from lazyfly.oci.locate import locate_image
from lazyfly.oci.reference import OciLayoutRef, RegistryRef


def test_existing_paths_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "alpine").mkdir()
    (tmp_path / "image.tar").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert locate_image("alpine") == Path("alpine")
    assert locate_image(str(tmp_path / "image.tar")) == tmp_path / "image.tar"


def test_oci_prefix_and_registry_references(tmp_path: Path) -> None:
    assert locate_image(f"oci:{tmp_path}/layout:v1") == OciLayoutRef(tmp_path / "layout", "v1")
    assert locate_image("localhost:5000/app:v1") == RegistryRef("localhost:5000", "app", "v1")
    assert locate_image("busybox") == RegistryRef("docker.io", "library/busybox", "latest")
    with pytest.raises(InvalidArgument):
        locate_image("/no/such/Dir")
