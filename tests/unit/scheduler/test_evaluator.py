import pytest

from lazyfly.scheduler.evaluator import HostView, is_bad_parent, location_score, score


def test_an_idle_running_seed_in_the_same_idc_and_location_scores_one():
    child = HostView(idc="dc1", location="eu|fr|paris")
    seed = HostView(idc="dc1", location="eu|fr|paris|rack1", is_seed=True)
    assert score(child, seed) == pytest.approx(0.6 + 0.2 + 0.1 * 3 / 5 + 0.1)


def test_load_weighs_most():
    child = HostView()
    idle = HostView(upload_limit=10, uploads_in_progress=0)
    busy = HostView(upload_limit=10, uploads_in_progress=9, idc="x")
    assert score(child, idle) > score(HostView(idc="x"), busy)


def test_location_counts_leading_parts_only():
    assert location_score(HostView(location="a|b|c"), HostView(location="a|x|c")) == pytest.approx(1 / 5)
    assert location_score(HostView(location=""), HostView(location="a")) == 0


def test_a_stopped_seed_is_worse_than_a_normal_peer():
    child = HostView()
    assert score(child, HostView(is_seed=True, seed_running=False)) < score(child, HostView())


@pytest.mark.parametrize(
    ("costs", "bad"),
    [
        ([10, 10, 10, 250], True),  # 25x the mean
        ([10, 10, 10, 150], False),  # 15x, too few samples for sigma
        ([10] * 29 + [11] * 10 + [40], True),  # mean + 3 sigma with enough samples
        ([10], False),
    ],
)
def test_a_parent_whose_last_piece_cost_far_exceeds_its_history_is_bad(costs, bad):
    assert is_bad_parent(costs) is bad
