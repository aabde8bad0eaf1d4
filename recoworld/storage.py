"""Atomic writes: a reader never sees a half-written file, and a crash mid-write leaves the
previous version in place."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


@contextmanager
def _atomically(path: Path) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it is synced and renamed onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a result file is readable like the CSV and PNG beside it
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    with _atomically(path) as tmp:
        pq.write_table(table, tmp)
    return path


def write_bytes_atomic(data: bytes, path: str | os.PathLike[str]) -> Path:
    """`data` as the whole of `path`, all or nothing, like `write_parquet_atomic`."""
    path = Path(path)
    with _atomically(path) as tmp:
        Path(tmp).write_bytes(data)
    return path


def write_json_atomic(data: object, path: str | os.PathLike[str]) -> Path:
    """`data` as indented JSON, atomically (manifests: a crash never leaves half of one)."""
    return write_bytes_atomic(json.dumps(data, indent=1).encode(), path)
