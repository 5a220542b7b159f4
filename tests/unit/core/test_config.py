"""lazyfly.config: YAML mappings into nested dataclasses, unknown keys and wrong types refused by name."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from lazyfly.config import from_mapping, load_config, to_mapping
from lazyfly.errors import InvalidArgument


@dataclass
class Inner:
    mode: Literal["a", "b"] = "a"
    names: list[str] = field(default_factory=list)


@dataclass
class Outer:
    path: Path = Path("/default")
    ratio: float = 0.5
    count: int = 1
    label: str | None = None
    inner: Inner = field(default_factory=Inner)
    extra: dict[str, int] = field(default_factory=dict)


def test_a_yaml_file_fills_nested_dataclasses(tmp_path: Path):
    config = tmp_path / "daemon.yaml"
    config.write_text("path: /var/cache\nratio: 2\ninner:\n  mode: b\n  names: [x, y]\nextra: {k: 3}\n")
    loaded = load_config(config, Outer)
    assert loaded == Outer(Path("/var/cache"), 2.0, 1, None, Inner("b", ["x", "y"]), {"k": 3})
    assert isinstance(loaded.ratio, float)


def test_an_empty_file_gives_the_defaults(tmp_path: Path):
    config = tmp_path / "empty.yaml"
    config.write_text("")
    assert load_config(config, Outer) == Outer()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"inner": {"mdoe": "a"}}, r"f\.yaml: inner\.mdoe: unknown key \(known keys: mode, names\)"),
        ({"count": "3"}, "count: expected int, got str"),
        ({"count": True}, "count: expected int, got bool"),
        ({"inner": {"mode": "c"}}, "inner.mode: expected one of 'a', 'b'"),
        ({"path": 5}, "path: expected Path"),
        ({"label": 5}, "label: expected str"),
        ({"extra": {"k": "v"}}, "extra.k: expected int"),
        ([1, 2], "f.yaml: expected a mapping"),
    ],
)
def test_bad_values_are_refused_naming_file_and_key(data: object, message: str):
    with pytest.raises(InvalidArgument, match=message):
        from_mapping(Outer, data, "f.yaml")


def test_broken_yaml_and_missing_files_are_invalid_arguments(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1,\n")
    with pytest.raises(InvalidArgument, match="not valid YAML"):
        load_config(broken, Outer)
    with pytest.raises(InvalidArgument, match="cannot read it"):
        load_config(tmp_path / "missing.yaml", Outer)


def test_to_mapping_inverts_from_mapping():
    value = Outer(Path("/p"), 1.5, 2, "l", Inner("b", ["n"]), {"k": 1})
    data = to_mapping(value)
    assert data["path"] == "/p"
    assert from_mapping(Outer, data, "x") == value
