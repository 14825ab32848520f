"""Dataset intake: stream an upload into the blob store, profile it, register it;
or register a file by URI after checking its digest."""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from domain.errors import InvalidPayload
from domain.statistics.profile import TableProfile, profile_rows
from service.application.ledger import Ledger, Written
from service.store.blobs import BlobStore, StoredBlob, digest_of_file

PROFILED_FORMATS = ("csv",)


def _lines(path: Path) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with path.open("rb") as handle:
        pending = ""
        while chunk := handle.read(1024 * 1024):
            pending += decoder.decode(chunk)
            *complete, pending = pending.split("\n")
            for line in complete:
                yield line + "\n"
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending


def profile_csv(path: Path) -> TableProfile:
    """Schema, row count and column statistics of a CSV file, in one streaming pass."""
    reader = csv.reader(_lines(path))
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidPayload("the CSV file is empty (no header row)", field="file") from None
    except csv.Error as exc:
        raise InvalidPayload(f"not a readable CSV file: {exc}", field="file") from None
    if not header or len(set(header)) != len(header):
        raise InvalidPayload("the CSV header must name each column once", field="file")
    try:
        return profile_rows(header, reader)
    except csv.Error as exc:
        raise InvalidPayload(f"not a readable CSV file: {exc}", field="file") from None


def describe(blob: StoredBlob, fmt: str) -> dict[str, Any]:
    """Fields computed from the stored file: schema, row count and profile (for CSV)."""
    if fmt not in PROFILED_FORMATS:
        return {"schema": [], "row_count": 0, "profile": []}
    profile = profile_csv(blob.path)
    return {"schema": profile.schema, "row_count": profile.row_count, "profile": profile.columns}


def register(
    ledger: Ledger,
    name: str,
    blob: StoredBlob,
    *,
    format: str,
    datasheet: dict[str, Any],
    source: str,
    actor: str,
    schema: list[dict[str, Any]] | None = None,
) -> Written:
    """Record a stored file as the next version of dataset ``name``, described by :func:`describe`;
    a declared ``schema`` replaces the computed one."""
    described = describe(blob, format)
    if schema is not None:
        described["schema"] = schema
    return ledger.register_dataset_version(
        name=name,
        digest=blob.digest,
        size=blob.size,
        format=format,
        datasheet=datasheet,
        source=source,
        actor=actor,
        **described,
    )


def resolve_uri(uri: str, import_dir: Path) -> Path:
    """A ``file://`` URI inside the import directory, as a path; refuse anything else."""
    parts = urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise InvalidPayload("only file:// URIs inside the import directory can be registered", field="uri")
    path = Path(unquote(parts.path)).resolve()
    if not path.is_relative_to(import_dir):
        raise InvalidPayload(f"the file must be inside the import directory {import_dir}", field="uri")
    if not path.is_file():
        raise InvalidPayload(f"no file at {uri}", field="uri")
    return path


def import_file(store: BlobStore, path: Path, expected_digest: str) -> StoredBlob:
    """Check the file's digest, then copy it into the store (nothing is stored on mismatch)."""
    digest, size = digest_of_file(path)
    if digest != expected_digest:
        raise InvalidPayload(
            f"the file's digest is {digest}, not the declared {expected_digest}; nothing was recorded",
            field="digest",
        )

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as handle:
            while chunk := handle.read(1024 * 1024):
                yield chunk

    blob = store.put_chunks(chunks(), max_bytes=size)
    if blob.digest != expected_digest:  # the file changed while being copied
        raise InvalidPayload("the file changed while it was being imported; nothing was recorded", field="uri")
    return blob
