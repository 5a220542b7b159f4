from lazyfly.builder.tree import WHITEOUT, Node, find, merge, new_dir, walk


def _file(content: str = "") -> Node:
    return Node(mode=0o100644, size=len(content), content_digest=content)


def _tree(**entries: Node) -> Node:
    root = new_dir()
    for name, node in entries.items():
        root.children[name.encode()] = node
    return root


def _dir(**entries: Node) -> Node:
    node = new_dir()
    node.children = {k.encode(): v for k, v in entries.items()}
    return node


def test_upper_file_replaces_lower_file():
    merged = merge(_tree(a=_file("old")), _tree(a=_file("new")))
    assert find(merged, b"/a").content_digest == "new"


def test_whiteout_deletes_lower_entry_and_is_not_kept():
    merged = merge(_tree(a=_file(), b=_file()), _tree(a=Node(mode=WHITEOUT)))
    assert find(merged, b"/a") is None
    assert find(merged, b"/b") is not None


def test_whiteout_of_a_directory_removes_its_subtree():
    merged = merge(_tree(d=_dir(x=_file())), _tree(d=Node(mode=WHITEOUT)))
    assert find(merged, b"/d") is None and find(merged, b"/d/x") is None


def test_directories_merge_and_upper_attributes_win():
    lower = _tree(d=_dir(x=_file()))
    upper_dir = _dir(y=_file())
    upper_dir.mode, upper_dir.uid = 0o040700, 42
    merged = merge(lower, _tree(d=upper_dir))
    d = find(merged, b"/d")
    assert set(d.children) == {b"x", b"y"} and d.mode == 0o040700 and d.uid == 42


def test_opaque_directory_hides_lower_content():
    upper_dir = _dir(new=_file())
    upper_dir.opaque = True
    merged = merge(_tree(d=_dir(old=_file(), sub=_dir(deep=_file()))), _tree(d=upper_dir))
    assert set(find(merged, b"/d").children) == {b"new"}
    assert not find(merged, b"/d").opaque


def test_opaque_root_of_a_layer_hides_everything_below():
    upper = _tree(keep=_file())
    upper.opaque = True
    merged = merge(_tree(gone=_file()), upper)
    assert set(merged.children) == {b"keep"}


def test_directory_replacing_a_file_drops_its_own_whiteouts():
    upper_dir = _dir(x=_file(), ghost=Node(mode=WHITEOUT))
    merged = merge(_tree(d=_file()), _tree(d=upper_dir))
    assert set(find(merged, b"/d").children) == {b"x"}


def test_file_replacing_a_directory():
    merged = merge(_tree(d=_dir(x=_file())), _tree(d=_file("f")))
    assert find(merged, b"/d").content_digest == "f"


def test_hard_link_stays_one_node_after_merge():
    shared = _file("same")
    merged = merge(new_dir(), _tree(a=shared, b=shared))
    assert find(merged, b"/a") is find(merged, b"/b")


def test_walk_is_sorted_and_depth_first():
    root = _tree(b=_dir(z=_file(), a=_file()), a=_file())
    assert [p for p, _ in walk(root)] == [b"/", b"/a", b"/b", b"/b/a", b"/b/z"]
