from pathlib import Path

import pytest

from lazyfly.backend.factory import open_backend
from lazyfly.backend.oci_layout import OciLayoutBackend
from lazyfly.backend.peer_proxy import PeerProxyBackend
from lazyfly.backend.registry import RegistryBackend
from lazyfly.errors import InvalidArgument
from lazyfly.oci.reference import OciLayoutRef, RegistryRef

REF = RegistryRef("registry.example:5000", "team/app", "v1")
PROXY = "http://127.0.0.1:4001"


def test_auto_picks_local_for_a_layout_even_with_a_proxy(tmp_path: Path):
    assert isinstance(open_backend("auto", tmp_path), OciLayoutBackend)
    assert isinstance(open_backend("auto", OciLayoutRef(tmp_path, "v1"), proxy_url=PROXY), OciLayoutBackend)


def test_auto_picks_proxy_with_a_proxy_url_and_registry_without():
    proxy = open_backend("auto", REF, proxy_url=PROXY, plain_http=True)
    assert isinstance(proxy, PeerProxyBackend) and isinstance(proxy.fallback, RegistryBackend)
    assert proxy.origin == "http://registry.example:5000"
    assert isinstance(open_backend("auto", REF), RegistryBackend)


def test_explicit_kinds_build_their_backend(tmp_path: Path):
    assert open_backend("local", tmp_path).name == "local"
    assert open_backend("registry", REF).name == "registry"
    assert open_backend("proxy", REF, proxy_url=PROXY).name == "proxy"


@pytest.mark.parametrize(
    "kind, location, proxy_url",
    [
        ("local", REF, None),
        ("registry", Path("/layout"), None),
        ("proxy", Path("/layout"), PROXY),
        ("proxy", REF, None),
        ("registry", REF, PROXY),
        ("local", Path("/layout"), PROXY),
        ("p2p", REF, None),
        ("proxy", REF, "127.0.0.1:4001"),
        ("proxy", REF, "ftp://127.0.0.1:4001"),
    ],
)
def test_impossible_combinations_are_invalid(kind: str, location: object, proxy_url: str | None):
    with pytest.raises(InvalidArgument):
        open_backend(kind, location, proxy_url=proxy_url)  # type: ignore[arg-type]
