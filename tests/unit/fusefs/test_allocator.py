import ctypes
import platform

import pytest

from lazyfly.fusefs import allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc's")
def test_glibc_takes_the_buffer_settings():
    assert allocator.keep_freed_buffers() is True


def test_a_c_library_without_mallopt_changes_nothing(monkeypatch: pytest.MonkeyPatch):
    class NoMallopt:
        def __init__(self, name: object) -> None:
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert allocator.keep_freed_buffers() is False


def test_a_refused_setting_is_reported(monkeypatch: pytest.MonkeyPatch):
    class Refusing:
        def __init__(self, name: object) -> None:
            self.mallopt = lambda option, value: 0

    monkeypatch.setattr(ctypes, "CDLL", Refusing)
    assert allocator.keep_freed_buffers() is False
