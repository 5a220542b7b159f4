from lazyfly.snapshotter.labels import (
    CRI_IMAGE_REF,
    CRI_LAYER_DIGEST,
    CRI_MANIFEST_DIGEST,
    SNAPSHOT_REF,
    STARGZ_DIGEST,
    STARGZ_LAYERS,
    STARGZ_REFERENCE,
    LayerSource,
    layer_source,
)


def test_ctr_remote_labels_name_the_image_and_layer():
    labels = {
        SNAPSHOT_REF: "sha256:chain",
        STARGZ_REFERENCE: "127.0.0.1:5000/app:v1",
        STARGZ_DIGEST: "sha256:layer",
        STARGZ_LAYERS: "sha256:layer,sha256:next",
    }
    assert layer_source(labels) == LayerSource("sha256:chain", "127.0.0.1:5000/app:v1", "sha256:layer")


def test_cri_labels_also_carry_the_manifest_digest():
    labels = {
        SNAPSHOT_REF: "sha256:chain",
        CRI_IMAGE_REF: "reg/app:v1",
        CRI_LAYER_DIGEST: "sha256:layer",
        CRI_MANIFEST_DIGEST: "sha256:manifest",
    }
    assert layer_source(labels) == LayerSource(
        "sha256:chain", "reg/app:v1", "sha256:layer", "sha256:manifest"
    )


def test_a_prepare_without_a_ref_or_a_source_is_ordinary():
    assert layer_source({}) is None
    assert layer_source({STARGZ_REFERENCE: "reg/app:v1", STARGZ_DIGEST: "sha256:x"}) is None
    assert layer_source({SNAPSHOT_REF: "sha256:chain"}) is None
