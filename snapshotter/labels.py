"""Snapshot labels: what containerd passes to say where a layer comes from, and what we add (pure).

containerd passes only `containerd.io/snapshot.ref` and `containerd.io/snapshot/*` labels to a
proxy snapshotter. Two sources name a layer's image: ctr-remote (`remote/stargz.*`, sent by
`ctr-remote image rpull`) and the CRI plugin (`cri.*`, with `disable_snapshot_annotations = false`).
Ours go under the same prefix so that containerd shows them and `List` can filter on them.
"""

from dataclasses import dataclass

SNAPSHOT_REF = "containerd.io/snapshot.ref"
_PREFIX = "containerd.io/snapshot/"
STARGZ_REFERENCE = _PREFIX + "remote/stargz.reference"
STARGZ_DIGEST = _PREFIX + "remote/stargz.digest"
STARGZ_LAYERS = _PREFIX + "remote/stargz.layers"
CRI_IMAGE_REF = _PREFIX + "cri.image-ref"
CRI_LAYER_DIGEST = _PREFIX + "cri.layer-digest"
CRI_IMAGE_LAYERS = _PREFIX + "cri.image-layers"
CRI_MANIFEST_DIGEST = _PREFIX + "cri.manifest-digest"

# Set on a committed remote snapshot: the fusefs image it is the root of, or that it is a data blob.
LAZYFLY_IMAGE = _PREFIX + "lazyfly.image"
LAZYFLY_BLOB = _PREFIX + "lazyfly.blob"


@dataclass(frozen=True)
class LayerSource:
    """Where the layer being prepared comes from: the committed name to create and the image."""

    ref: str  # the chain id containerd wants committed
    image: str  # the image reference, as the user gave it
    layer_digest: str
    manifest_digest: str | None = None


def layer_source(labels: dict[str, str]) -> LayerSource | None:
    """The layer's source if containerd named one; None for an ordinary Prepare."""
    ref = labels.get(SNAPSHOT_REF)
    if not ref:
        return None
    if labels.get(STARGZ_REFERENCE) and labels.get(STARGZ_DIGEST):
        return LayerSource(ref, labels[STARGZ_REFERENCE], labels[STARGZ_DIGEST])
    if labels.get(CRI_IMAGE_REF) and labels.get(CRI_LAYER_DIGEST):
        return LayerSource(
            ref, labels[CRI_IMAGE_REF], labels[CRI_LAYER_DIGEST], labels.get(CRI_MANIFEST_DIGEST) or None
        )
    return None


def lazy_image_of(labels: dict[str, str]) -> str | None:
    """The fusefs image id a snapshot is the root of, if it is one."""
    return labels.get(LAZYFLY_IMAGE) or None


def is_lazy_blob(labels: dict[str, str]) -> bool:
    """Whether a snapshot stands for a lazyfly data blob (its files live in the image's root)."""
    return labels.get(LAZYFLY_BLOB) == "true"
