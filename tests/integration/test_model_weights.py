"""Model weights: safetensors files built into an image, mounted, and loaded back with safetensors.

Three files of ~100 MB (float32 matrices of random normal values, plus a float16, an int64 and a
bfloat16-sized uint16 tensor and metadata) are written with `safetensors.numpy.save_file`, built with
`lazyfly build`, and mounted from the OCI layout. `safe_open(..., framework="np")` memory-maps each
file from the mount; every tensor must equal the original, bit for bit, and the metadata too.
A second mount with an empty cache loads one tensor only and must fetch a small part of the image.
"""

from pathlib import Path

import numpy as np
import pytest
from fixtures.mounts import Mounts
from integration.cli import lazyfly
from safetensors import safe_open
from safetensors.numpy import save_file

pytestmark = pytest.mark.integration

FILES = 3
MATRICES_PER_FILE = 6
ROWS, COLS = 1024, 4096  # 16 MiB of float32 per matrix: ~100 MB per file
METADATA = {"format": "np", "model": "lazyfly-test"}

Tensors = dict[str, np.ndarray]


def _tensors(rng: np.random.Generator, index: int) -> Tensors:
    tensors: Tensors = {
        f"layers.{index}.{n}.weight": rng.standard_normal((ROWS, COLS), dtype=np.float32)
        for n in range(MATRICES_PER_FILE)
    }
    tensors[f"layers.{index}.bias"] = rng.standard_normal(COLS, dtype=np.float32)
    tensors[f"layers.{index}.norm"] = rng.standard_normal(COLS).astype(np.float16)
    tensors[f"layers.{index}.positions"] = rng.integers(-(2**62), 2**62, size=(257, 3), dtype=np.int64)
    tensors[f"layers.{index}.packed"] = rng.integers(0, 2**16, size=4099, dtype=np.uint16)
    return tensors


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Tensors]]:
    """A directory of safetensors files and, per file name, the tensors written to it."""
    root = tmp_path_factory.mktemp("weights") / "model"
    root.mkdir()
    rng = np.random.default_rng(20240601)
    written: dict[str, Tensors] = {}
    for index in range(FILES):
        name = f"model-{index + 1:05d}-of-{FILES:05d}.safetensors"
        tensors = _tensors(rng, index)
        save_file(tensors, str(root / name), metadata=METADATA)
        written[name] = tensors
    return root, written


@pytest.fixture(scope="module")
def weights_layout(
    weights: tuple[Path, dict[str, Tensors]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("weights-image") / "layout"
    lazyfly("build", weights[0], "-o", out)
    return out


def test_safetensors_load_from_the_mount_equal_the_originals(
    weights: tuple[Path, dict[str, Tensors]], weights_layout: Path, mounts: Mounts
):
    source, written = weights
    point = mounts.mount(weights_layout, "--prefetch", "none")
    assert sorted(p.name for p in point.iterdir()) == sorted(written)
    for name, originals in written.items():
        assert (point / name).stat().st_size == (source / name).stat().st_size
        with safe_open(str(point / name), framework="np") as loaded:
            assert loaded.metadata() == METADATA
            assert sorted(loaded.keys()) == sorted(originals)
            for key, original in originals.items():
                tensor = loaded.get_tensor(key)
                assert tensor.dtype == original.dtype and tensor.shape == original.shape, key
                assert np.array_equal(tensor, original), f"{name}: tensor {key} differs"


def test_loading_one_tensor_fetches_a_small_part_of_the_image(
    weights: tuple[Path, dict[str, Tensors]], weights_layout: Path, mounts: Mounts
):
    _source, written = weights
    cache = mounts.tmp_path / "cache"
    point = mounts.mount(weights_layout, "--prefetch", "none")
    name = sorted(written)[-1]
    key = f"layers.{FILES - 1}.3.weight"
    with safe_open(str(point / name), framework="np") as loaded:
        assert np.array_equal(loaded.get_tensor(key), written[name][key])
    fetched = sum(p.stat().st_blocks * 512 for p in (cache / "blobs").rglob("*") if p.is_file())
    total = sum(t.nbytes for tensors in written.values() for t in tensors.values())
    tensor_bytes = written[name][key].nbytes
    # The tensor, the header's chunk, and at the tensor's end what the kernel reads ahead (4 MiB),
    # what a miss fetches past itself (the 4 MiB merge limit) and fusefs's read-ahead of a file read
    # sequentially (the 16 MiB read opens windows up to 32 MiB: 16 MiB past it): nowhere near ~300 MB.
    slack = (1 << 20) + 2 * ((4 << 20) + (4 << 20)) + (16 << 20)
    assert tensor_bytes <= fetched < tensor_bytes + slack, (fetched, tensor_bytes, total)
    assert fetched < total / 8
