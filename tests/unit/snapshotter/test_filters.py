import pytest

from lazyfly.errors import InvalidArgument
from lazyfly.snapshotter.filters import matches_any, parse_filter, parse_filters
from lazyfly.snapshotter.model import Info, Kind

REF = "containerd.io/snapshot.ref"
LAYER = Info(
    "sha256:abc", parent="sha256:base", kind=Kind.COMMITTED, labels={REF: "sha256:abc", "stage": "b"}
)
ACTIVE = Info("default/3/extract-1", kind=Kind.ACTIVE, labels={})


def passes(text: str, info: Info) -> bool:
    return matches_any(parse_filters([text]), info)


def test_the_filter_containerd_sends_after_a_remote_commit_matches_the_layer():
    text = f'labels."{REF}"==sha256:abc,parent=="sha256:base"'
    assert passes(text, LAYER)
    assert not passes(f'labels."{REF}"==sha256:abc,parent=="sha256:other"', LAYER)


@pytest.mark.parametrize(
    ("text", "info", "expected"),
    [
        ("name==sha256:abc", LAYER, True),
        ('name=="sha256:abc"', LAYER, True),
        ("name!=sha256:abc", LAYER, False),
        ("parent==sha256:base", LAYER, True),
        ('parent==""', ACTIVE, True),
        ("kind==committed", LAYER, True),
        ("kind==Committed", LAYER, False),
        ("kind==active", LAYER, False),
        ("labels.stage==b", LAYER, True),
        ("labels.stage~=/^(a|b)$/", LAYER, True),
        ("labels.stage~=^c", LAYER, False),
        ("labels.stage", LAYER, True),
        ("labels.stage", ACTIVE, False),
        ("labels.missing!=x", LAYER, True),
        ("unknownfield==x", LAYER, False),
    ],
)
def test_selectors_match_like_containerd_filters(text, info, expected):
    assert passes(text, info) is expected


def test_several_filters_are_alternatives_and_none_matches_everything():
    filters = parse_filters(["name==nope", "kind==active"])
    assert matches_any(filters, ACTIVE)
    assert not matches_any(filters, LAYER)
    assert matches_any([], LAYER)
    assert matches_any(parse_filters(["", "  "]), LAYER)


def test_quoted_field_parts_may_hold_dots_and_slashes():
    (selector,) = parse_filter('labels."containerd.io/snapshot/x.y"==1')
    assert selector.path == ("labels", "containerd.io/snapshot/x.y")
    assert selector.value == "1"


@pytest.mark.parametrize("text", ['name=="open', "labels.k~=/open", "==x", "name==a junk", "labels.k~=/(/"])
def test_malformed_filters_are_refused_by_name(text):
    with pytest.raises(InvalidArgument, match="filter"):
        parse_filter(text)
