"""Registry authentication: Docker config credentials, WWW-Authenticate challenges, token caching.

This module owns three layers, each usable alone:

- `load_credentials(registry)` reads `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`):
  `credHelpers` for the host first, then an `auths` entry (base64 `auth`, or username/password,
  or `identitytoken`), then `credsStore`. A credential helper that fails is logged as a warning
  and treated as "no credentials": a broken keychain must not stop anonymous pulls.
- `parse_challenges(header)` is a pure parser of `WWW-Authenticate`.
- `RegistryAuth` is an `httpx.Auth`. It sends cached credentials first; on a 401 it reads the
  challenge, fetches a Bearer token (or uses Basic credentials) and retries once. A second 401
  after fresh credentials raises AuthenticationFailed. Tokens are cached per (realm, service,
  scope) and refreshed before they expire (30 s or 10 % of their lifetime, whichever is shorter).

The token request is yielded from the auth flow, so it goes through the caller's client and works
the same under sync and async httpx. Only 401 answers and token answers are read into memory:
httpx's default would read every body, blob downloads included.
"""

import base64
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from lazyfly.errors import FailedPrecondition

log = logging.getLogger(__name__)

DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")
DOCKER_HUB_SERVER_URL = "https://index.docker.io/v1/"
DEFAULT_TOKEN_LIFETIME = 60.0
_HELPER_TIMEOUT = 30.0
_MANIFEST_OR_BLOB_PATH = re.compile(r"^/v2/(.+?)/(?:manifests|blobs|tags|referrers)/")


class AuthenticationFailed(FailedPrecondition):
    """The registry refused our credentials (or we had none) for the named repository."""


@dataclass(frozen=True)
class Credentials:
    """What the Docker config holds for one registry: a user and password, or an identity token."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Challenge:
    """One challenge from a WWW-Authenticate header: a lower-case scheme and its parameters."""

    scheme: str
    params: dict[str, str]


# --- Docker config ---------------------------------------------------------------------------------


def docker_config_path() -> Path:
    """Return the Docker config file that the docker CLI would read."""
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def registry_keys(registry: str) -> list[str]:
    """Return the hosts under which a registry's credentials may be stored (Docker Hub has aliases)."""
    if registry in DOCKER_HUB_ALIASES:
        return [*DOCKER_HUB_ALIASES]
    return [registry]


def _key_host(key: str) -> str:
    """Reduce a config key (`https://host/v1/`, `host`, `http://host:5000`) to `host[:port]`."""
    host = key.split("://", 1)[-1]
    return host.split("/", 1)[0]


def load_credentials(registry: str, config_path: Path | None = None) -> Credentials | None:
    """Return the credentials the Docker config holds for `registry`, or None."""
    path = config_path or docker_config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable docker config %s: %s", path, exc)
        return None
    if not isinstance(config, dict):
        log.warning("ignoring docker config %s: not a JSON object", path)
        return None
    hosts = registry_keys(registry)
    server_url = DOCKER_HUB_SERVER_URL if registry in DOCKER_HUB_ALIASES else registry
    helpers = config.get("credHelpers") or {}
    for key, helper in helpers.items() if isinstance(helpers, dict) else ():
        if _key_host(key) in hosts and isinstance(helper, str):
            return run_credential_helper(helper, server_url)
    auths = config.get("auths") or {}
    for key, entry in auths.items() if isinstance(auths, dict) else ():
        if _key_host(key) in hosts and isinstance(entry, dict):
            found = _credentials_from_entry(entry, path, key)
            if found is not None:
                return found
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        return run_credential_helper(store, server_url)
    return None


def _credentials_from_entry(entry: dict, path: Path, key: str) -> Credentials | None:
    username, password = entry.get("username"), entry.get("password")
    if entry.get("auth"):
        try:
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            log.warning("ignoring malformed auth for %s in %s", key, path)
    token = entry.get("identitytoken") or None
    if not (username or token):
        return None
    return Credentials(username or None, password or None, token)


def run_credential_helper(name: str, server_url: str) -> Credentials | None:
    """Run `docker-credential-NAME get`; failures are logged and mean "no credentials"."""
    try:
        done = subprocess.run(
            [f"docker-credential-{name}", "get"],
            input=server_url.encode(),
            capture_output=True,
            timeout=_HELPER_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("credential helper docker-credential-%s failed for %s: %s", name, server_url, exc)
        return None
    if done.returncode != 0:
        message = (done.stdout or done.stderr).decode(errors="replace").strip()
        log.warning(
            "credential helper docker-credential-%s has nothing for %s: %s", name, server_url, message
        )
        return None
    try:
        answer = json.loads(done.stdout)
        username, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        log.warning("credential helper docker-credential-%s answered malformed JSON", name)
        return None
    if username == "<token>":  # the helper protocol's marker for an identity (refresh) token
        return Credentials(identity_token=secret)
    return Credentials(username, secret)


# --- Challenge parsing -----------------------------------------------------------------------------

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_AUTH_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*(?:,|$)')
_SCHEME = re.compile(rf"\s*,?\s*({_TOKEN})(?:\s+|$)")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate value into challenges (several may share one header)."""
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(header):
        match = _SCHEME.match(header, pos)
        if not match:
            break
        scheme, pos = match.group(1).lower(), match.end()
        params: dict[str, str] = {}
        while (param := _AUTH_PARAM.match(header, pos)) is not None:
            quoted, bare = param.group(2), param.group(3)
            value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
            params[param.group(1).lower()] = value
            pos = param.end()
        challenges.append(Challenge(scheme, params))
    return challenges


# --- httpx.Auth ------------------------------------------------------------------------------------


@dataclass
class _Token:
    value: str
    expires_at: float
    refresh_at: float


def _refresh_margin(lifetime: float) -> float:
    return min(30.0, lifetime * 0.1)


class RegistryAuth(httpx.Auth):
    """Credentials and token cache for one registry, used as the `auth` of an httpx client."""

    def __init__(self, registry: str, credentials: Credentials | None = None, *, clock=time.monotonic):
        self.registry = registry
        self.credentials = credentials
        self._clock = clock
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._bearer: tuple[str, str] | None = None  # (realm, service) of the last Bearer challenge
        self._basic = False  # the registry asked for Basic: send it up front from now on
        self.token_requests = 0

    @classmethod
    def from_docker_config(cls, registry: str, config_path: Path | None = None) -> "RegistryAuth":
        """Build an auth for `registry` from the Docker config (may run a credential helper: blocks)."""
        return cls(registry, load_credentials(registry, config_path))

    # httpx drives these two; both share the generator below.
    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Run the auth flow, reading only the bodies the flow needs (401s and token answers)."""
        flow = self.auth_flow(request)
        outgoing = next(flow)
        while True:
            response = yield outgoing
            if outgoing is not request or response.status_code == 401:
                response.read()
            try:
                outgoing = flow.send(response)
            except StopIteration:
                return

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Async twin of `sync_auth_flow`."""
        flow = self.auth_flow(request)
        outgoing = next(flow)
        while True:
            response = yield outgoing
            if outgoing is not request or response.status_code == 401:
                await response.aread()
            try:
                outgoing = flow.send(response)
            except StopIteration:
                return

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send cached credentials; on a 401 get fresh ones and retry once."""
        scope = _scope_for(request)
        if self._bearer is not None:
            token = yield from self._cached_token(*self._bearer, scope, request)
            if token is not None:
                request.headers["Authorization"] = f"Bearer {token}"
        elif self._basic and self.credentials and self.credentials.username:
            request.headers["Authorization"] = self._basic_header()
        response = yield request
        if response.status_code != 401 or response.url.host != request.url.host:
            return
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        bearer = next((c for c in challenges if c.scheme == "bearer" and "realm" in c.params), None)
        if bearer is not None:
            realm, service = bearer.params["realm"], bearer.params.get("service", "")
            self._bearer = (realm, service)
            scopes = bearer.params.get("scope") or scope
            token = yield from self._fetch_token(realm, service, scopes, request)
            request.headers["Authorization"] = f"Bearer {token}"
        elif any(c.scheme == "basic" for c in challenges):
            if not (self.credentials and self.credentials.username):
                raise AuthenticationFailed(
                    self._refusal(request, "asks for Basic auth and we have no credentials")
                )
            self._basic = True
            request.headers["Authorization"] = self._basic_header()
        else:
            raise AuthenticationFailed(self._refusal(request, "answered 401 without a usable challenge"))
        response = yield request
        if response.status_code == 401 and response.url.host == request.url.host:
            raise AuthenticationFailed(self._refusal(request, "refused fresh credentials"))

    def _cached_token(
        self, realm: str, service: str, scope: str, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, str | None]:
        now = self._clock()
        # A pull,push token also serves pulls, so reuse it rather than asking for a weaker one.
        candidates = [scope, scope.replace(":pull", ":pull,push")] if scope.endswith(":pull") else [scope]
        for candidate in candidates:
            token = self._tokens.get((realm, service, candidate))
            if token is not None and now < token.refresh_at:
                return token.value
        if any((realm, service, c) in self._tokens for c in candidates):
            return (yield from self._fetch_token(realm, service, scope, request))
        return None

    def _fetch_token(
        self, realm: str, service: str, scope: str, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, str]:
        token_request = self._token_request(realm, service, scope, request.extensions.get("timeout"))
        self.token_requests += 1
        response = yield token_request
        if response.status_code in (401, 403):
            raise AuthenticationFailed(
                self._refusal(
                    request, f"token service {realm} refused our credentials ({response.status_code})"
                )
            )
        try:
            response.raise_for_status()
            answer = response.json()
            value = answer.get("token") or answer.get("access_token")
            lifetime = float(answer.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (httpx.HTTPStatusError, ValueError, AttributeError, TypeError) as exc:
            raise AuthenticationFailed(
                self._refusal(request, f"token service {realm} failed: {exc}")
            ) from None
        if not isinstance(value, str) or not value:
            raise AuthenticationFailed(self._refusal(request, f"token service {realm} returned no token"))
        now = self._clock()
        self._tokens[(realm, service, scope)] = _Token(
            value, now + lifetime, now + lifetime - _refresh_margin(lifetime)
        )
        return value

    def _token_request(self, realm: str, service: str, scope: str, timeout: object) -> httpx.Request:
        # Requests built here bypass the client's build_request, so they carry its timeouts by hand.
        extensions = {"timeout": timeout} if timeout is not None else {}
        scopes = scope.split(" ") if scope else []
        creds = self.credentials
        if creds and creds.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "client_id": "lazyfly",
            }
            form |= {"service": service} if service else {}
            body = httpx.QueryParams(list(form.items()) + [("scope", s) for s in scopes])
            return httpx.Request(
                "POST",
                realm,
                content=str(body).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                extensions=extensions,
            )
        params = ([("service", service)] if service else []) + [("scope", s) for s in scopes]
        headers = {}
        if creds and creds.username:
            headers["Authorization"] = self._basic_header()
        return httpx.Request("GET", realm, params=params, headers=headers, extensions=extensions)

    def _basic_header(self) -> str:
        assert self.credentials is not None  # callers check; this keeps the type checker honest
        pair = f"{self.credentials.username}:{self.credentials.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def _refusal(self, request: httpx.Request, why: str) -> str:
        repository = _repository_of(request) or "(no repository)"
        who = f" as {self.credentials.username!r}" if self.credentials and self.credentials.username else ""
        return f"registry {self.registry} {why} for repository {repository}{who}"


def _repository_of(request: httpx.Request) -> str | None:
    match = _MANIFEST_OR_BLOB_PATH.match(request.url.path)
    return match.group(1) if match else None


def _scope_for(request: httpx.Request) -> str:
    """Return the token scope a request needs: pull for reads, pull,push for writes."""
    repository = _repository_of(request)
    if repository is None:
        return ""
    action = "pull" if request.method in ("GET", "HEAD") else "pull,push"
    return f"repository:{repository}:{action}"
