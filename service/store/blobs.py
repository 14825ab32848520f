"""Content-addressed file store under the data directory.

Files live at ``blobs/sha256/ab/cdef...`` named by the SHA-256 of their bytes.
Writes stream through a temporary file (owner-only) with a size limit and are
renamed into place only when complete; every read checks the digest, so a file
changed on disk is refused rather than served or trained on.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from domain.dataset import check_digest
from domain.errors import InvalidPayload, LedgerError, NotFound, PayloadTooLarge, TamperedEvent

CHUNK = 1024 * 1024


class BlobTampered(TamperedEvent):
    """A stored file no longer has the digest it is stored under."""

    title = "Stored file changed"


@dataclass(frozen=True)
class StoredBlob:
    """A file in the store."""

    digest: str
    size: int
    path: Path


class StorageFull(LedgerError):
    """The blob store's file system has no room (or quota) left for a file."""

    title = "Storage full"


_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def _room_checked() -> Iterator[None]:
    """Turn "no space left" from the file system into :class:`StorageFull`."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL:
            raise StorageFull("the blob store is full: no space left for this file; nothing was stored") from None
        raise


class _Upload:
    """One write into the store: a 0600 temporary file, hashed as it grows,
    renamed into place on success and removed on any failure."""

    def __init__(self, store: BlobStore, temp: Path, max_bytes: int) -> None:
        self.store, self.temp, self.max_bytes = store, temp, max_bytes
        self.hasher, self.size = hashlib.sha256(), 0
        with _room_checked():
            self.fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.stored: StoredBlob

    def write(self, chunk: bytes | memoryview) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise PayloadTooLarge(f"the upload exceeds the limit of {self.max_bytes} bytes")
        self.hasher.update(chunk)
        view = memoryview(chunk)
        with _room_checked():
            while view:
                view = view[os.write(self.fd, view) :]

    def __enter__(self) -> _Upload:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self.finish()
        else:
            self.abandon()

    def finish(self) -> StoredBlob:
        """Make the file durable and move it into place; on any failure nothing stays behind."""
        try:
            try:
                with _room_checked():
                    os.fsync(self.fd)
            finally:
                os.close(self.fd)
            with _room_checked():
                self.stored = self.store._commit(self.temp, "sha256:" + self.hasher.hexdigest(), self.size)
        except BaseException:
            self.temp.unlink(missing_ok=True)
            raise
        return self.stored

    def abandon(self) -> None:
        """Close and remove the temporary file."""
        try:
            os.close(self.fd)
        finally:
            self.temp.unlink(missing_ok=True)


class _Parts:
    """Consecutive files in one stream, the i-th exactly ``sizes[i]`` bytes: written as the bytes
    arrive, stored (made durable and renamed into place) only once every one is complete."""

    def __init__(self, store: BlobStore, sizes: list[int]) -> None:
        self.store, self.sizes = store, sizes
        self.uploads: list[_Upload] = []

    def _receiving(self) -> _Upload | None:
        """The part the next byte belongs to (begun as needed, empty parts too); None after the last."""
        while not self.uploads or self.uploads[-1].size == self.sizes[len(self.uploads) - 1]:
            if len(self.uploads) == len(self.sizes):
                return None
            self.uploads.append(self.store._begin(self.sizes[len(self.uploads)]))
        return self.uploads[-1]

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            upload = self._receiving()
            if upload is None:
                raise InvalidPayload(f"the body is longer than the {len(self.sizes)} sizes given", field="size")
            room = self.sizes[len(self.uploads) - 1] - upload.size
            upload.write(view[:room])
            view = view[room:]

    def check_complete(self) -> None:
        if self._receiving() is not None:
            raise InvalidPayload(f"the body is shorter than the {len(self.sizes)} sizes given", field="size")

    def store_all(self) -> list[StoredBlob]:
        """Make every part durable and move it into place (blocking: file system calls only)."""
        stored = []
        while self.uploads:
            stored.append(self.uploads.pop(0).finish())
        return stored

    def discard(self) -> None:
        """Remove the temporary files of the parts not stored."""
        while self.uploads:
            self.uploads.pop().abandon()


class BlobStore:
    """Content-addressed files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    def path_of(self, digest: str) -> Path:
        """Where the blob with ``digest`` lives (whether or not it exists)."""
        check_digest(digest)
        hexdigest = digest.removeprefix("sha256:")
        return self.root / "sha256" / hexdigest[:2] / hexdigest[2:]

    def _begin(self, max_bytes: int) -> _Upload:
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        return _Upload(self, self.tmp / f"upload-{os.getpid()}-{os.urandom(8).hex()}", max_bytes)

    def _commit(self, temp: Path, digest: str, size: int) -> StoredBlob:
        final = self.path_of(digest)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if final.exists():
            temp.unlink()
        else:
            os.replace(temp, final)
        return StoredBlob(digest, size, final)

    def put_chunks(self, chunks: Iterable[bytes], max_bytes: int) -> StoredBlob:
        """Store a stream of bytes; refuse one larger than ``max_bytes`` (nothing stays behind)."""
        with self._begin(max_bytes) as upload:
            for chunk in chunks:
                upload.write(chunk)
        return upload.stored

    async def put_async_chunks(self, chunks: AsyncIterator[bytes], max_bytes: int) -> StoredBlob:
        """Like :meth:`put_chunks` for an async stream (an HTTP request body)."""
        with self._begin(max_bytes) as upload:
            async for chunk in chunks:
                upload.write(chunk)
        return upload.stored

    async def put_async_parts(self, chunks: AsyncIterator[bytes], sizes: list[int]) -> list[StoredBlob]:
        """Store consecutive files sent as one stream, the i-th exactly ``sizes[i]`` bytes long.

        :class:`InvalidPayload` when the stream is shorter or longer than the sizes say, and then
        none of them is stored. The files are written as the bytes arrive and made durable
        together at the end, away from the event loop.
        """
        parts = _Parts(self, sizes)
        try:
            async for chunk in chunks:
                parts.write(chunk)
            parts.check_complete()
            return await anyio.to_thread.run_sync(parts.store_all)
        finally:
            parts.discard()

    def put_bytes(self, data: bytes) -> StoredBlob:
        """Store a small byte string."""
        return self.put_chunks([data], max_bytes=len(data))

    def exists(self, digest: str) -> bool:
        """True when the blob is present (not checked)."""
        return self.path_of(digest).is_file()

    def verify(self, digest: str) -> StoredBlob:
        """Re-hash the stored file; raise :class:`BlobTampered` if it changed, NotFound if absent."""
        path = self.path_of(digest)
        if not path.is_file():
            raise NotFound(f"no stored file with digest {digest}", field="digest")
        found, size = digest_of_file(path)
        if found != digest:
            raise BlobTampered(f"the stored file {digest} was changed on disk; it will not be used")
        return StoredBlob(digest, size, path)

    def read_verified(self, digest: str) -> Iterator[bytes]:
        """Verify now (BlobTampered or NotFound before any byte is handed out), then stream the file's bytes."""
        return _chunks_of(self.verify(digest).path)


def _chunks_of(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def digest_of_file(path: Path) -> tuple[str, int]:
    """``sha256:<hex>`` and size of a file, streamed."""
    hasher, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


__all__ = ["BlobStore", "BlobTampered", "StoredBlob", "digest_of_file"]
