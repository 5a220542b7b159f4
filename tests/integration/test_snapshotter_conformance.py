"""The snapshotter conformance suite against lazyfly's snapshotter and containerd's own overlayfs."""

import pytest
from fixtures.snapshotter import SnapshotsClient, start_snapshotter, stop_snapshotter, teardown_fusefs
from suites.snapshotter_suite import SnapshotterSuite

from lazyfly.local_containerd import NO_GARBAGE_COLLECTION, local_containerd

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["lazyfly", "containerd-overlayfs"])
def snapshots(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(request.param)
    if request.param == "lazyfly":
        running = start_snapshotter(base)
        client = SnapshotsClient(running.address, "lazyfly")
        try:
            yield client
        finally:
            client.close()
            stop_snapshotter(running)
            teardown_fusefs(running)
    else:
        with local_containerd(base, extra_config=NO_GARBAGE_COLLECTION) as ctrd:
            client = SnapshotsClient(ctrd.address, "overlayfs", namespace="default")
            try:
                yield client
            finally:
                client.close()


class TestSnapshotter(SnapshotterSuite):
    pass
