"""The peers of one task as a directed acyclic graph: an edge runs from a parent to its child (pure).

Rules:
- Rule 1: an edge that would close a cycle (the child already reaches the parent), a self-edge, or
  an edge to or from an unknown peer is refused with FailedPrecondition naming both peers.
- Rule 2: deleting a peer deletes its edges; its children lose a parent and keep their others.
"""

from collections.abc import Iterable

from lazyfly.errors import FailedPrecondition


class PeerDag:
    """Parents and children of the peers of one task."""

    def __init__(self) -> None:
        self._parents: dict[str, set[str]] = {}
        self._children: dict[str, set[str]] = {}

    def add_peer(self, peer_id: str) -> None:
        """Add a peer without edges (a no-op if present)."""
        self._parents.setdefault(peer_id, set())
        self._children.setdefault(peer_id, set())

    def delete_peer(self, peer_id: str) -> None:
        """Remove a peer and its edges (Rule 2)."""
        for parent in self._parents.pop(peer_id, set()):
            self._children[parent].discard(peer_id)
        for child in self._children.pop(peer_id, set()):
            self._parents[child].discard(peer_id)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._parents

    def __len__(self) -> int:
        return len(self._parents)

    def peers(self) -> list[str]:
        """Every peer."""
        return list(self._parents)

    def parents(self, peer_id: str) -> set[str]:
        """The parents of a peer."""
        return set(self._parents.get(peer_id, ()))

    def children(self, peer_id: str) -> set[str]:
        """The children of a peer."""
        return set(self._children.get(peer_id, ()))

    def can_add_edge(self, parent: str, child: str) -> bool:
        """Whether parent → child keeps the graph acyclic (Rule 1)."""
        if parent == child or parent not in self or child not in self:
            return False
        return not self._reaches(child, parent)

    def add_edge(self, parent: str, child: str) -> None:
        """Make `parent` a parent of `child` (Rule 1)."""
        if not self.can_add_edge(parent, child):
            raise FailedPrecondition(f"peer {parent} cannot be a parent of {child}: unknown peer or a cycle")
        self._children[parent].add(child)
        self._parents[child].add(parent)

    def delete_edges_into(self, child: str, parents: Iterable[str] | None = None) -> None:
        """Drop the edges from `parents` (all of them when None) into `child`."""
        for parent in list(self._parents.get(child, ())) if parents is None else parents:
            self._parents[child].discard(parent)
            if parent in self._children:
                self._children[parent].discard(child)

    def _reaches(self, start: str, target: str) -> bool:
        stack, seen = [start], {start}
        while stack:
            node = stack.pop()
            if node == target:
                return True
            for child in self._children.get(node, ()):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        return False
