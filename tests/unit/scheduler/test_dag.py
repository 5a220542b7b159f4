import pytest
from hypothesis import given
from hypothesis import strategies as st

from lazyfly.errors import FailedPrecondition
from lazyfly.scheduler.dag import PeerDag


def dag_of(*peers: str) -> PeerDag:
    dag = PeerDag()
    for peer in peers:
        dag.add_peer(peer)
    return dag


def test_an_edge_that_closes_a_cycle_is_refused():
    dag = dag_of("seed", "a", "b")
    dag.add_edge("seed", "a")
    dag.add_edge("a", "b")
    assert not dag.can_add_edge("b", "seed")
    with pytest.raises(FailedPrecondition, match="cycle"):
        dag.add_edge("b", "seed")
    assert not dag.can_add_edge("a", "a")
    assert not dag.can_add_edge("a", "nobody")


def test_deleting_a_peer_drops_its_edges_and_children_keep_their_other_parents():
    dag = dag_of("seed", "a", "b")
    dag.add_edge("seed", "b")
    dag.add_edge("a", "b")
    dag.delete_peer("a")
    assert dag.parents("b") == {"seed"}
    assert "a" not in dag and len(dag) == 2


@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=60))
def test_whatever_edges_are_tried_the_graph_stays_acyclic(edges):
    dag = dag_of(*(str(n) for n in range(8)))
    for parent, child in edges:
        if dag.can_add_edge(str(parent), str(child)):
            dag.add_edge(str(parent), str(child))
    # a topological order exists: repeatedly remove peers without parents
    left = set(dag.peers())
    while left:
        roots = {peer for peer in left if not dag.parents(peer) & left}
        assert roots, "a cycle"
        left -= roots
