import pytest

from lazyfly.progress import NullProgress, ProgressSink, RichProgress


def test_sinks_satisfy_the_protocol() -> None:
    assert isinstance(NullProgress(), ProgressSink)
    assert isinstance(RichProgress("x"), ProgressSink)


def test_rich_progress_is_silent_when_stderr_is_not_a_tty(capsys: pytest.CaptureFixture[str]) -> None:
    with RichProgress("pulling") as progress:
        progress.add_total(100)
        progress.advance(60)
        progress.advance(40)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
