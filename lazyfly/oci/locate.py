"""Where an image given on the command line lives: a local path, an OCI layout, or a registry.

Rule: an existing file or directory wins over every other reading (so `./alpine` and `alpine` can
both be meant), then the `oci:` prefix, then a registry reference, whose parser says what is wrong.
"""

from pathlib import Path

from lazyfly.oci.reference import OciLayoutRef, RegistryRef, parse_oci_layout_ref, parse_registry_ref

ImageLocation = Path | OciLayoutRef | RegistryRef


def locate_image(text: str) -> ImageLocation:
    """Return the local Path, OciLayoutRef or RegistryRef that `text` names."""
    path = Path(text)
    if text and path.exists():
        return path
    if text.startswith("oci:"):
        return parse_oci_layout_ref(text)
    return parse_registry_ref(text)
