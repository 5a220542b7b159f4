import base64
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from lazyfly.oci.auth import (
    Challenge,
    Credentials,
    RegistryAuth,
    docker_config_path,
    load_credentials,
    parse_challenges,
)


def test_parse_bearer_challenge() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/ubuntu:pull,push"'
    )
    assert parse_challenges(header) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/ubuntu:pull,push",
            },
        )
    ]


def test_parse_basic_challenge_and_case() -> None:
    assert parse_challenges('BASIC Realm="registry"') == [Challenge("basic", {"realm": "registry"})]


def test_parse_several_challenges_with_escapes_and_bare_values() -> None:
    header = (
        'Basic realm="a \\"quoted\\" realm", '
        'Bearer realm="https://t/token", service=svc , error=invalid_token'
    )
    assert parse_challenges(header) == [
        Challenge("basic", {"realm": 'a "quoted" realm'}),
        Challenge("bearer", {"realm": "https://t/token", "service": "svc", "error": "invalid_token"}),
    ]


@pytest.mark.parametrize("header", ["", "   ", "Negotiate", ",,,"])
def test_parse_degenerate_headers(header: str) -> None:
    challenges = parse_challenges(header)
    assert all(not c.params for c in challenges)


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "docker"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory / "config.json"


def test_docker_config_path_follows_env(docker_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert docker_config_path() == docker_config
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", "/home/someone")
    assert docker_config_path() == Path("/home/someone/.docker/config.json")


def test_missing_config_means_no_credentials(docker_config: Path) -> None:
    assert load_credentials("reg.example.com") is None


def test_auths_entry_with_base64_auth_matches_with_or_without_scheme(docker_config: Path) -> None:
    docker_config.write_text(
        json.dumps(
            {
                "auths": {
                    "https://reg.example.com": {"auth": _auth("alice", "pw:with:colons")},
                    "localhost:5000": {"username": "bob", "password": "pw2"},
                    "other.io": {"identitytoken": "tok"},
                }
            }
        )
    )
    assert load_credentials("reg.example.com") == Credentials("alice", "pw:with:colons")
    assert load_credentials("localhost:5000") == Credentials("bob", "pw2")
    assert load_credentials("other.io") == Credentials(None, None, "tok")
    assert load_credentials("reg.example.com:443") is None


@pytest.mark.parametrize(
    "key", ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io", "docker.io"]
)
def test_docker_hub_aliases(docker_config: Path, key: str) -> None:
    docker_config.write_text(json.dumps({"auths": {key: {"auth": _auth("hub", "pw")}}}))
    assert load_credentials("docker.io") == Credentials("hub", "pw")
    assert load_credentials("registry-1.docker.io") == Credentials("hub", "pw")


def test_malformed_config_is_ignored_with_a_warning(
    docker_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    docker_config.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert load_credentials("reg.example.com") is None
    assert "unreadable docker config" in caplog.text


def _helper(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return directory


def test_cred_helper_for_host_wins_and_gets_server_url(docker_config: Path, bin_dir: Path) -> None:
    _helper(
        bin_dir,
        "fake",
        'read url; printf \'{"ServerURL":"%s","Username":"u-%s","Secret":"s"}\' "$url" "$url"\n',
    )
    docker_config.write_text(
        json.dumps(
            {
                "credHelpers": {"reg.example.com": "fake"},
                "auths": {"reg.example.com": {"auth": _auth("x", "y")}},
            }
        )
    )
    assert load_credentials("reg.example.com") == Credentials("u-reg.example.com", "s")


def test_creds_store_and_identity_token_marker(docker_config: Path, bin_dir: Path) -> None:
    _helper(bin_dir, "store", 'cat >/dev/null; echo \'{"Username":"<token>","Secret":"refresh"}\'\n')
    docker_config.write_text(json.dumps({"credsStore": "store", "auths": {"docker.io": {}}}))
    assert load_credentials("docker.io") == Credentials(identity_token="refresh")


def test_failing_or_missing_helper_is_tolerated(
    docker_config: Path, bin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _helper(bin_dir, "broken", "echo 'credentials not found in native keychain'; exit 1\n")
    docker_config.write_text(json.dumps({"credHelpers": {"a.io": "broken", "b.io": "absent"}}))
    with caplog.at_level(logging.WARNING):
        assert load_credentials("a.io") is None
        assert load_credentials("b.io") is None
    assert "not found in native keychain" in caplog.text
    assert "docker-credential-absent" in caplog.text


def test_registry_auth_from_docker_config(docker_config: Path) -> None:
    docker_config.write_text(json.dumps({"auths": {"reg.example.com": {"auth": _auth("alice", "pw")}}}))
    auth = RegistryAuth.from_docker_config("reg.example.com")
    assert auth.credentials == Credentials("alice", "pw")
    assert "pw" not in repr(auth.credentials)
