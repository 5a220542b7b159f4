"""OCI images: references, manifests, image-layout directories and the registry client."""
