"""containerd's filter language for `List`, parsed and matched against snapshot infos (pure).

Syntax (containerd `filters`): a filter is selectors joined by `,` (all must match); several filters
are alternatives (any may match); no filter matches everything. A selector is a field path, then
optionally an operator and a value:
    name==foo   parent!=""   kind==committed   labels."containerd.io/snapshot.ref"==sha256:ab
    labels.stage~=/^(a|b)$/   labels."k"   (present and not empty)
Field path parts are identifiers or double-quoted strings joined by `.`; values are bare (up to the
next `,`), double-quoted, or `/regex/`. Fields: name, parent, kind (lower case,
as containerd's metadata store names them: view, active, committed) and labels.<key>.

Rule: a malformed filter raises InvalidArgument naming the filter; an unknown field matches nothing,
as in containerd's adaptors.
"""

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass

from lazyfly.errors import InvalidArgument
from lazyfly.snapshotter.model import Info

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_OPERATORS = ("==", "!=", "~=")


@dataclass(frozen=True)
class Selector:
    """One `field op value` test; `operator` is None for a presence test."""

    path: tuple[str, ...]
    operator: str | None = None
    value: str = ""

    def matches(self, info: Info) -> bool:
        """Whether `info` passes this test."""
        present, actual = _field(info, self.path)
        if self.operator is None:
            return present and actual != ""
        if self.operator == "~=":
            return present and re.search(self.value, actual) is not None
        equal = present and actual == self.value
        return equal if self.operator == "==" else not equal


Filter = tuple[Selector, ...]


def parse_filters(texts: Sequence[str]) -> list[Filter]:
    """Parse each filter string; InvalidArgument on the first malformed one."""
    return [parse_filter(text) for text in texts if text.strip()]


def matches_any(filters: Sequence[Filter], info: Info) -> bool:
    """Whether `info` passes one of the filters (all of them pass when there are none)."""
    return not filters or any(all(selector.matches(info) for selector in f) for f in filters)


def parse_filter(text: str) -> Filter:
    """Parse one filter: selectors separated by commas."""
    scanner = _Scanner(text)
    selectors = [scanner.selector()]
    while scanner.take(","):
        selectors.append(scanner.selector())
    scanner.end()
    return tuple(selectors)


def _field(info: Info, path: tuple[str, ...]) -> tuple[bool, str]:
    match path:
        case ("name",):
            return True, info.name
        case ("parent",):
            return True, info.parent
        case ("kind",):
            return True, info.kind.name.lower()
        case ("labels", key):
            return key in info.labels, info.labels.get(key, "")
    return False, ""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, why: str) -> InvalidArgument:
        return InvalidArgument(f"filter {self.text!r}: {why} at offset {self.pos}")

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def take(self, token: str) -> bool:
        self.skip_spaces()
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def end(self) -> None:
        self.skip_spaces()
        if self.pos != len(self.text):
            raise self.fail("unexpected text")

    def selector(self) -> Selector:
        path = [self.field_part()]
        while self.take("."):
            path.append(self.field_part())
        for operator in _OPERATORS:
            if self.take(operator):
                value = self.value(regex_allowed=operator == "~=")
                if operator == "~=":
                    try:
                        re.compile(value)
                    except re.error as exc:
                        raise self.fail(f"bad regular expression {value!r}: {exc}") from None
                return Selector(tuple(path), operator, value)
        return Selector(tuple(path))

    def field_part(self) -> str:
        self.skip_spaces()
        if self.text.startswith('"', self.pos):
            return self.quoted()
        match = _IDENTIFIER.match(self.text, self.pos)
        if match is None:
            raise self.fail("expected a field name")
        self.pos = match.end()
        return match.group()

    def value(self, regex_allowed: bool) -> str:
        self.skip_spaces()
        if self.text.startswith('"', self.pos):
            return self.quoted()
        if regex_allowed and self.text.startswith("/", self.pos):
            close = self.text.find("/", self.pos + 1)
            while close != -1 and self.text[close - 1] == "\\":
                close = self.text.find("/", close + 1)
            if close == -1:
                raise self.fail("unterminated /regex/")
            value = self.text[self.pos + 1 : close].replace("\\/", "/")
            self.pos = close + 1
            return value
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] != "," and not self.text[self.pos].isspace():
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str:
        start = self.pos
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                self.pos += 2
                continue
            self.pos += 1
            if char == '"':
                try:
                    value = ast.literal_eval(self.text[start : self.pos])
                except (SyntaxError, ValueError) as exc:
                    raise self.fail(f"bad quoted string: {exc}") from None
                return str(value)
        raise self.fail("unterminated quoted string")
