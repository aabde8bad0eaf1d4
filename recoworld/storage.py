"""Atomic writes: a reader never sees a half-written file, and a crash mid-write leaves the
previous version in place.

Every result file the project writes goes through `write_atomic` (or the Parquet and JSON
helpers built on the same mechanism): the data goes to a temporary file in the target's own
directory (so the rename stays on one filesystem), the file is fsynced, renamed over the
target with `os.replace`, and the directory is fsynced so the rename itself survives a power
loss. Without the two fsyncs a crash can leave an empty or truncated file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def _fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable (POSIX; Windows cannot open a directory)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_beside(path: Path) -> str:
    """A new, empty temporary file in `path`'s directory (created if need be), for `commit` to rename onto it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return tmp


def commit(tmp: str, path: Path) -> None:
    """`tmp` (from `temp_beside`, fully written and closed) synced and renamed onto `path`, durably. A writer that
    fills a file over a long time (a study's trajectories, shard by shard) holds it open between the two."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; a result file is readable like the CSV and PNG beside it
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextmanager
def _atomically(path: Path) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it is synced and renamed onto `path`.

    If the body raises, the temporary file is removed and `path` is untouched."""
    tmp = temp_beside(path)
    try:
        yield tmp
        commit(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """`data` as the whole of `path`, all or nothing (`str` is written as UTF-8)."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    with _atomically(path) as tmp:
        Path(tmp).write_bytes(payload)
    return path


def write_bytes_atomic(data: bytes, path: str | os.PathLike[str]) -> Path:
    """`write_atomic` with the older (data, path) argument order, kept for its remaining callers."""
    return write_atomic(path, data)


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """`table` as a Parquet file at `path`, all or nothing (pyarrow writes the temporary file itself)."""
    path = Path(path)
    with _atomically(path) as tmp:
        pq.write_table(table, tmp)
    return path


def write_json_atomic(data: object, path: str | os.PathLike[str]) -> Path:
    """`data` as indented JSON, atomically (manifests: a crash never leaves half of one)."""
    return write_atomic(path, json.dumps(data, indent=1))
