"""Image references: `HOST[:PORT]/REPO[:TAG|@DIGEST]` for registries and `oci:PATH[:TAG]` for layouts.

This module is a pure codec (no I/O). It owns the reference grammar of the distribution spec and
keeps these rules:

- Rule 1: the first path component is a registry only if it contains `.` or `:` or is `localhost`;
  otherwise the registry is `docker.io`, and a single-component repository gets `library/`
  (Docker's normalisation, so `alpine` and `docker.io/library/alpine:latest` are one image).
- Rule 2: a reference with neither tag nor digest means tag `latest`.
- Rule 3: every malformed input raises InvalidArgument naming the text and the part that is wrong.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from lazyfly.errors import InvalidArgument

DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY = re.compile(rf"^(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?$")
# Known algorithms must carry exactly their hex length, lower case: anything else could not match
# a blob's real digest and would only fail later, further from the typo.
_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_REPOSITORY_MAX = 255


def check_digest(digest: str, *, context: str | None = None) -> str:
    """Return `digest` if it is a valid `algo:encoded` digest; raise InvalidArgument otherwise."""
    where = f" in {context!r}" if context else ""
    if not _DIGEST.match(digest):
        raise InvalidArgument(f"malformed digest {digest!r}{where} (expected e.g. sha256:<64 hex>)")
    algo, _, encoded = digest.partition(":")
    length = _HEX_LENGTHS.get(algo)
    if length is not None and (len(encoded) != length or encoded.strip("0123456789abcdef")):
        raise InvalidArgument(f"malformed {algo} digest {digest!r}{where}: need {length} lower-case hex")
    return digest


def check_tag(tag: str, *, context: str | None = None) -> str:
    """Return `tag` if it matches the tag grammar (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`)."""
    if not _TAG.match(tag):
        where = f" in {context!r}" if context else ""
        raise InvalidArgument(f"malformed tag {tag!r}{where} (letters, digits, _ . -; at most 128)")
    return tag


def check_repository(repository: str, *, context: str | None = None) -> str:
    """Return `repository` if it is a valid lower-case repository path."""
    if len(repository) > _REPOSITORY_MAX or not _REPOSITORY.match(repository):
        where = f" in {context!r}" if context else ""
        raise InvalidArgument(
            f"malformed repository {repository!r}{where} (lower-case components of a-z 0-9 . _ - "
            "separated by /)"
        )
    return repository


@dataclass(frozen=True)
class RegistryRef:
    """An image in a registry. `registry` is `host[:port]`; tag and digest may both be set."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after `/manifests/` in the registry API: the digest if known, else the tag."""
        if self.digest:
            return self.digest
        return self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_registry_ref(text: str) -> RegistryRef:
    """Parse `[HOST[:PORT]/]REPO[:TAG][@DIGEST]` into a normalised RegistryRef."""
    if not text or text != text.strip():
        raise InvalidArgument(f"malformed image reference {text!r}: empty or surrounded by spaces")
    name, at, digest = text.partition("@")
    if at:
        check_digest(digest, context=text)
    tag: str | None = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        check_tag(tag, context=text)
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
        if not _REGISTRY.match(registry):
            raise InvalidArgument(f"malformed registry host {registry!r} in {text!r}")
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    check_repository(repository, context=text)
    if tag is None and not at:
        tag = DEFAULT_TAG
    return RegistryRef(registry, repository, tag, digest if at else None)


@dataclass(frozen=True)
class OciLayoutRef:
    """An image in a local OCI image-layout directory, optionally named by its tag."""

    path: Path
    tag: str | None = None

    def __str__(self) -> str:
        return f"oci:{self.path}" + (f":{self.tag}" if self.tag else "")


def parse_oci_layout_ref(text: str) -> OciLayoutRef:
    """Parse `oci:PATH[:TAG]`.

    A path may itself contain `:`; the text after the last `:` is taken as the tag only when it is
    a valid tag (a tag never contains `/`, so `oci:/a:b/c` is the path `/a:b/c`).
    """
    if not text.startswith("oci:"):
        raise InvalidArgument(f"not an OCI layout reference {text!r} (expected oci:PATH[:TAG])")
    body = text[len("oci:") :]
    path, colon, tag = body.rpartition(":")
    if not colon or not _TAG.match(tag):
        path, tag = body, ""
    if not path:
        raise InvalidArgument(f"OCI layout reference {text!r} names no path")
    return OciLayoutRef(Path(path), tag or None)
