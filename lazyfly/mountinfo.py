"""What is mounted where, read from /proc/self/mountinfo — never by stat(), which a dead or
orphaned FUSE mount fails or blocks."""

import os
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \\ooo octal
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_fields(path: Path) -> list[str] | None:
    """The mountinfo fields of the topmost mount at `path`, or None if nothing is mounted there."""
    # realpath would stat a dead mount's path; resolve only its parent
    target = os.path.join(os.path.realpath(path.parent), path.name)
    found = None
    for line in MOUNTINFO.read_text().splitlines():
        fields = line.split()
        if _unescape(fields[4]) == target:
            found = fields
    return found


def mount_entry(path: Path) -> tuple[str, str] | None:
    """(filesystem type, source) of the topmost mount at `path`, or None if nothing is mounted."""
    fields = mount_fields(path)
    if fields is None:
        return None
    sep = fields.index("-")
    return fields[sep + 1], _unescape(fields[sep + 2])


def mounts_under(base: Path) -> list[str]:
    """Every mount point strictly below `base`."""
    prefix = os.path.realpath(base) + "/"
    targets = (_unescape(line.split()[4]) for line in MOUNTINFO.read_text().splitlines())
    return [target for target in targets if target.startswith(prefix)]
