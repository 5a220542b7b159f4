"""fusefs API routes, called directly (no socket, no mount): statuses, bodies and the error map."""

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from lazyfly.errors import AlreadyExists, Corrupt, InvalidArgument, NotFound, Unavailable
from lazyfly.fusefs.api import ApiRoutes, status_of
from lazyfly.fusefs.daemon_state import DaemonLifecycle, DaemonState
from lazyfly.fusefs.metrics import build_registry
from lazyfly.fusefs.namespace import Namespace
from lazyfly.fusefs.served_images import ServedImages

Scenario = Callable[[ApiRoutes, ServedImages], Awaitable[None]]


def run_with_routes(tmp_path: Path, scenario: Scenario, *, running: bool = True) -> None:
    namespace = Namespace(single=False)
    lifecycle = DaemonLifecycle()
    if running:
        lifecycle.move(DaemonState.RUNNING)
    images = ServedImages(namespace, tmp_path / "cache", tmp_path / "mnt", lifecycle)
    routes = ApiRoutes(images, build_registry(lambda: list(namespace), lambda: 0.0))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(images.serve)
            try:
                await scenario(routes, images)
            finally:
                nursery.cancel_scope.cancel()
        await images.close_all()

    trio.run(main)


async def call(routes: ApiRoutes, method: str, target: str, body: object = None) -> tuple[int, dict, object]:
    raw = json.dumps(body).encode() if body is not None else b""
    status, headers, payload = await routes.handle(method, target, [], raw)
    decoded = json.loads(payload) if dict(headers).get("Content-Type") == "application/json" else payload
    return status, dict(headers), decoded


@pytest.fixture
def layout(built_image) -> Path:
    return built_image.source.parent / "oci"


def test_add_then_describe_an_image(tmp_path: Path, layout: Path):
    async def scenario(routes: ApiRoutes, images: ServedImages) -> None:
        status, _, info = await call(
            routes, "POST", "/api/v1/images", {"id": "app", "reference": str(layout)}
        )
        assert status == 201 and info["id"] == "app" and info["backend"] == "local"
        status, _, again = await call(routes, "GET", "/api/v1/images/app")
        assert status == 200 and again == info
        status, _, daemon = await call(routes, "GET", "/api/v1/daemon")
        assert daemon["state"] == "RUNNING" and [i["id"] for i in daemon["images"]] == ["app"]
        status, headers, text = await call(routes, "GET", "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert b'lazyfly_fusefs_chunk_reads_total{image="app"}' in text

    run_with_routes(tmp_path, scenario)


def test_refusals_carry_a_status_and_a_named_message(tmp_path: Path, layout: Path):
    async def scenario(routes: ApiRoutes, images: ServedImages) -> None:
        add = {"id": "app", "reference": str(layout)}
        assert (await call(routes, "POST", "/api/v1/images", add))[0] == 201
        status, _, error = await call(routes, "POST", "/api/v1/images", add)
        assert (status, error["error"]) == (409, "ImageExists") and "app" in error["message"]
        status, _, error = await call(routes, "POST", "/api/v1/images", {"id": "x"})
        assert status == 400 and "reference: missing" in error["message"]
        status, _, error = await call(routes, "GET", "/api/v1/images/nope")
        assert status == 404 and "nope" in error["message"]
        status, headers, _ = await call(routes, "PUT", "/api/v1/images")
        assert status == 405 and headers["Allow"] == "POST"
        status, _, error = await call(routes, "GET", "/api/v2/whatever")
        assert status == 404

    run_with_routes(tmp_path, scenario)


def test_a_daemon_not_running_refuses_adds_with_503(tmp_path: Path, layout: Path):
    async def scenario(routes: ApiRoutes, images: ServedImages) -> None:
        status, _, error = await call(routes, "POST", "/api/v1/images", {"id": "a", "reference": str(layout)})
        assert status == 503 and "INIT" in error["message"]

    run_with_routes(tmp_path, scenario, running=False)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidArgument("x"), 400),
        (NotFound("x"), 404),
        (AlreadyExists("x"), 409),
        (Unavailable("x"), 502),
        (Corrupt("x"), 502),
    ],
)
def test_each_category_has_one_status(error: Exception, status: int):
    assert status_of(error) == status
