import json

import trio

from lazyfly.fusefs.bootstrap_store import load_stored, store
from lazyfly.lazy_image import LazyImageMetadata, fetch_lazy_metadata
from lazyfly.oci.manifest import sha256_digest


def _metadata(built_image) -> LazyImageMetadata:
    layout = built_image.blob_path.parents[2]  # LAYOUT/blobs/sha256/<hex>
    return trio.run(fetch_lazy_metadata, layout)


def test_a_stored_image_loads_again_by_its_manifest_digest(tmp_path, built_image):
    meta = _metadata(built_image)
    stored = store(tmp_path, meta)
    again = load_stored(tmp_path, meta.descriptor.digest, "test image")
    assert again == stored
    assert again.blob_layers == meta.blob_layers
    assert again.bootstrap_path.read_bytes() == meta.bootstrap


def test_an_image_the_cache_does_not_hold_whole_is_not_loaded_from_it(tmp_path, built_image):
    meta = _metadata(built_image)
    assert load_stored(tmp_path, meta.descriptor.digest, "test image") is None
    stored = store(tmp_path, meta)
    stored.bootstrap_path.unlink()
    assert load_stored(tmp_path, meta.descriptor.digest, "test image") is None


def test_a_stored_manifest_that_does_not_match_its_digest_is_dropped(tmp_path, built_image):
    meta = _metadata(built_image)
    stored = store(tmp_path, meta)
    manifest = stored.bootstrap_path.with_name(stored.bootstrap_path.name + ".manifest")
    document = json.loads(manifest.read_bytes())
    document["layers"] = document["layers"][-1:]  # a tampered manifest: no data blobs
    manifest.write_bytes(json.dumps(document).encode())
    assert load_stored(tmp_path, meta.descriptor.digest, "test image") is None
    assert not manifest.exists()  # the next add fetches and stores it again


def test_a_manifest_that_is_not_a_lazyfly_images_is_not_loaded(tmp_path, built_image):
    meta = _metadata(built_image)
    document = json.loads(meta.manifest_bytes)
    document["layers"] = document["layers"][:-1]  # the bootstrap layer gone
    data = json.dumps(document).encode()
    digest = sha256_digest(data)
    name = digest.replace(":", "-")
    (tmp_path / "bootstraps").mkdir()
    (tmp_path / "bootstraps" / name).write_bytes(meta.bootstrap)
    (tmp_path / "bootstraps" / f"{name}.manifest").write_bytes(data)
    assert load_stored(tmp_path, digest, "test image") is None
