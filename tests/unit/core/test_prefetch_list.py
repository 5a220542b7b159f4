"""The prefetch list codec: paths alone or with byte ranges, comments, and refusals."""

import pytest

from lazyfly.errors import InvalidArgument
from lazyfly.prefetch_list import PrefetchEntry, format_prefetch_list, parse_prefetch_list


def test_paths_and_ranges_round_trip_and_comments_are_skipped():
    text = "# recorded\n\n/usr/bin/python3.11\n/usr/lib/libm.so.6\t0:65536,1048576:4096\n /etc/hosts \n"
    entries = parse_prefetch_list(text, "list")
    assert entries == [
        PrefetchEntry("/usr/bin/python3.11"),
        PrefetchEntry("/usr/lib/libm.so.6", ((0, 65536), (1048576, 4096))),
        PrefetchEntry("/etc/hosts"),
    ]
    assert parse_prefetch_list(format_prefetch_list(entries), "again") == entries


def test_an_entry_covers_a_chunk_if_one_of_its_ranges_overlaps_it():
    entry = PrefetchEntry("/lib", ((100, 10), (5000, 1)))
    assert entry.covers(0, 101) and entry.covers(109, 1) and entry.covers(4096, 4096)
    assert not entry.covers(0, 100) and not entry.covers(110, 4890) and not entry.covers(5001, 10)
    assert PrefetchEntry("/whole").covers(1 << 40, 1)


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("relative/path", "absolute"),
        ("/f\t", "OFFSET:LENGTH"),
        ("/f\t10", "OFFSET:LENGTH"),
        ("/f\t10:0", "OFFSET:LENGTH"),
        ("/f\t-1:5", "OFFSET:LENGTH"),
        ("/f\t0:5,x:1", "OFFSET:LENGTH"),
    ],
)
def test_a_bad_line_is_refused_with_where_it_is(line: str, complaint: str):
    with pytest.raises(InvalidArgument, match=f"list.txt:2: .*{complaint}"):
        parse_prefetch_list(f"/ok\n{line}\n", "list.txt")
