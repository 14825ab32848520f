"""A blob store whose file system is full refuses the file clearly and keeps nothing of it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from service.api.errors import http_status
from service.store import blobs
from service.store.blobs import BlobStore, StorageFull


def _no_room(*_: object) -> int:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("call", ["write", "fsync"])
def test_no_space_left_is_storage_full_and_no_partial_file_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    store = BlobStore(tmp_path / "blobs")
    monkeypatch.setattr(blobs.os, call, _no_room)

    with pytest.raises(StorageFull) as full:
        store.put_chunks([b"a" * 1000, b"b" * 1000], max_bytes=10_000)

    assert http_status(full.value) == 507
    assert "nothing was stored" in full.value.detail
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
    assert not (tmp_path / "blobs" / "sha256").exists()


def test_other_file_system_errors_are_not_called_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(tmp_path / "blobs")

    def _io_error(*_: object) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(blobs.os, "write", _io_error)

    with pytest.raises(OSError) as failed:
        store.put_bytes(b"data")

    assert not isinstance(failed.value, StorageFull) and failed.value.errno == errno.EIO
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


def test_a_write_the_kernel_takes_in_parts_is_stored_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(tmp_path / "blobs")
    real_write = os.write
    monkeypatch.setattr(blobs.os, "write", lambda fd, data: real_write(fd, bytes(data)[:7]))

    stored = store.put_bytes(b"0123456789" * 10)

    assert stored.path.read_bytes() == b"0123456789" * 10
