from lazyfly.p2p.download.request import DownloadRequest
from lazyfly.p2p.task.task_id import task_id


def test_the_request_names_its_task_as_the_reference_recipe_does():
    request = DownloadRequest("https://example.com", tag="foo", application="bar", piece_length=1024)
    assert request.task_id == task_id("https://example.com", tag="foo", application="bar", piece_length=1024)


def test_a_request_survives_the_download_message_round_trip():
    request = DownloadRequest(
        "https://example.com/blob?X-Amz-Signature=abc",
        headers=(("Authorization", "Bearer x"),),
        tag="t",
        application="a",
        priority=3,
        piece_length=8 << 20,
        digest="sha256:" + "0" * 64,
        need_back_to_source=True,
    )
    message = request.to_proto(100 << 20, 8 << 20)
    assert (message.actual_content_length, message.actual_piece_count) == (100 << 20, 13)
    back = DownloadRequest.from_proto(message)
    assert back == request and back.task_id == request.task_id
