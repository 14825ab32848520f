"""Several files sent as one stream are stored each under its own digest, or none of them is."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from domain.errors import InvalidPayload
from service.store.blobs import BlobStore, StoredBlob


def _stream(*chunks: bytes) -> AsyncIterator[bytes]:
    async def chunked() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return chunked()


def _put(store: BlobStore, sizes: list[int], *chunks: bytes) -> list[StoredBlob]:
    async def put() -> list[StoredBlob]:
        return await store.put_async_parts(_stream(*chunks), sizes)

    return anyio.run(put)


def test_parts_split_across_chunks_are_stored_each_under_its_own_digest(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    files = [b"model bytes", b"", b"predictions", b"{}"]

    stored = _put(store, [len(f) for f in files], b"model by", b"tes" + b"predic", b"tions{", b"}")

    assert [blob.digest for blob in stored] == ["sha256:" + hashlib.sha256(f).hexdigest() for f in files]
    assert [blob.path.read_bytes() for blob in stored] == files
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


@pytest.mark.parametrize("body", [b"abcdef", b"abcdefgh"], ids=["shorter", "longer"])
def test_a_body_that_does_not_hold_exactly_the_sizes_given_stores_nothing(tmp_path: Path, body: bytes) -> None:
    store = BlobStore(tmp_path / "blobs")

    with pytest.raises(InvalidPayload) as refused:
        _put(store, [3, 4], body)

    assert refused.value.field == "size"
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
    assert not (tmp_path / "blobs" / "sha256").exists()
