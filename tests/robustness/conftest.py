"""Shared helpers of the robustness tests: a disk that fills up at a chosen write."""

from __future__ import annotations

import errno
import os

import pytest


@pytest.fixture()
def full_disk(monkeypatch):
    """``full_disk(module, "name")`` makes ``module.name`` (a write function) fail as a full disk
    does: with OSError ENOSPC, or with the ``error`` given (a library's own error type)."""

    def fill(module, name: str, error: BaseException | None = None) -> None:
        def write(*args, **kwargs):
            raise error or OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(module, name, write)

    return fill
