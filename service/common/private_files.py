"""Files only their owner may read (keys, a witness's state), replaced atomically and durably.

The new content is written to a temporary file with mode 0600 beside the
target, flushed to disk, renamed over the target, and the rename itself is
flushed (the directory is fsynced), so a crash leaves either the old file or
the new one, never a torn or world-readable one.
"""

from __future__ import annotations

import os
from pathlib import Path


def replace_private(path: Path, data: bytes) -> None:
    """Make ``data`` the content of ``path`` (mode 0600), atomically; the folder is created 0700 if missing."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
