import pytest

from lazyfly.p2p.task.task_id import filter_query_params, task_id

URL = "https://example.com"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"tag": "foo", "application": "bar", "revision": "v1.0", "piece_length": 1024},
            "5844f27a257287e9b734256bb25603d8005422ced8c0377f15063ec11963b25f",
        ),
        (
            {"tag": "foo", "application": "bar"},
            "06408fbf247ddaca478f8cb9565fe5591c28efd0994b8fea80a6a87d3203c5ca",
        ),
        ({"tag": "foo"}, "3c3f230ef9f191dd2821510346a7bc138e4894bee9aee184ba250a3040701d2a"),
    ],
)
def test_task_ids_match_the_reference_vectors(params, expected):
    assert task_id(URL, **params) == expected


def test_presigned_urls_of_one_object_share_a_task():
    a = task_id("https://bucket.s3.example.com/blob?X-Amz-Signature=abc&X-Amz-Date=1&part=2")
    b = task_id("https://bucket.s3.example.com/blob?X-Amz-Signature=def&X-Amz-Date=9&part=2")
    assert a == b
    assert a != task_id("https://bucket.s3.example.com/blob?part=3")


def test_filtering_every_parameter_drops_the_question_mark():
    assert filter_query_params("https://h/p?ns=docker.io", ["ns"]) == "https://h/p"
    assert filter_query_params("https://h/p?a=1&ns=x&b=2", ["ns"]) == "https://h/p?a=1&b=2"
    assert filter_query_params("https://h/p", ["ns"]) == "https://h/p"
