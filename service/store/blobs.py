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

from domain.dataset import check_digest
from domain.errors import LedgerError, NotFound, PayloadTooLarge, TamperedEvent

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

    def write(self, chunk: bytes) -> None:
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
        try:
            try:
                if kind is None:
                    with _room_checked():
                        os.fsync(self.fd)
            finally:
                os.close(self.fd)
            if kind is None:
                with _room_checked():
                    self.stored = self.store._commit(self.temp, "sha256:" + self.hasher.hexdigest(), self.size)
        finally:
            if kind is not None or not hasattr(self, "stored"):
                self.temp.unlink(missing_ok=True)


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
