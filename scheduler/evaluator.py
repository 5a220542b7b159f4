"""Scoring candidate parents and spotting bad ones (pure), as Dragonfly's scheduler does.

Score = 0.6·load + 0.2·same IDC + 0.1·location + 0.1·host type, each part in [0, 1]:
- load: the share of the candidate's upload slots that are free;
- IDC: 1 when both hosts name the same IDC, else 0;
- location: the share of `|`-separated location parts (up to 5) the two share from the left;
- host type: 1 for a seed peer that is running, 0.5 for a normal peer (0 for a seed not running).

A parent is bad when its last piece cost is far above its history: more than 20× the mean, or, with
enough samples, more than mean + 3σ.
"""

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

LOAD_WEIGHT, IDC_WEIGHT, LOCATION_WEIGHT, HOST_TYPE_WEIGHT = 0.6, 0.2, 0.1, 0.1
MAX_LOCATION_PARTS = 5
BAD_COST_MULTIPLE = 20
MIN_SAMPLES_FOR_SIGMA = 30


@dataclass(frozen=True)
class HostView:
    """What scoring needs of a host."""

    idc: str = ""
    location: str = ""
    is_seed: bool = False
    seed_running: bool = True
    upload_limit: int = 200
    uploads_in_progress: int = 0


def load_score(host: HostView) -> float:
    """The free share of the host's upload slots."""
    if host.upload_limit <= 0:
        return 0.0
    return max(0.0, host.upload_limit - host.uploads_in_progress) / host.upload_limit


def idc_score(child: HostView, parent: HostView) -> float:
    """1 when both hosts are in the same (named) IDC."""
    return 1.0 if child.idc and child.idc == parent.idc else 0.0


def location_score(child: HostView, parent: HostView) -> float:
    """The share of leading location parts the hosts have in common."""
    if not child.location or not parent.location:
        return 0.0
    mine = child.location.split("|")[:MAX_LOCATION_PARTS]
    theirs = parent.location.split("|")[:MAX_LOCATION_PARTS]
    common = 0
    for a, b in zip(mine, theirs, strict=False):
        if a != b:
            break
        common += 1
    return common / MAX_LOCATION_PARTS


def host_type_score(parent: HostView) -> float:
    """A running seed is the best parent; a normal peer half as good."""
    if parent.is_seed:
        return 1.0 if parent.seed_running else 0.0
    return 0.5


def score(child: HostView, parent: HostView) -> float:
    """How good a parent `parent` is for `child`, in [0, 1]."""
    return (
        LOAD_WEIGHT * load_score(parent)
        + IDC_WEIGHT * idc_score(child, parent)
        + LOCATION_WEIGHT * location_score(child, parent)
        + HOST_TYPE_WEIGHT * host_type_score(parent)
    )


def is_bad_parent(costs: Sequence[float]) -> bool:
    """Whether the last of a parent's piece costs is far above the ones before it."""
    if len(costs) < 2:
        return False
    *history, last = costs
    mean = statistics.fmean(history)
    if mean > 0 and last > BAD_COST_MULTIPLE * mean:
        return True
    if len(history) >= MIN_SAMPLES_FOR_SIGMA:
        return last > mean + 3 * statistics.pstdev(history)
    return False
