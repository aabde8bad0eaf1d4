"""recoworld.storage: every result file is written whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recoworld import storage
from recoworld.storage import write_atomic, write_json_atomic, write_parquet_atomic


class _Unserializable:
    """A value json.dumps cannot encode: the write must fail before touching the target."""


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_atomic_writes_bytes_and_str_whole(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "out.bin"  # missing folders are created
    write_atomic(target, b"\x00\x01" * 50_000)
    assert target.read_bytes() == b"\x00\x01" * 50_000
    write_atomic(target, "héllo")
    assert target.read_bytes() == "héllo".encode()
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)
    assert _leftovers(target.parent) == []


def test_write_atomic_syncs_the_file_and_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else str(fd))
        real(fd)

    monkeypatch.setattr(storage.os, "fsync", spy)
    write_atomic(tmp_path / "a.txt", "x")
    assert len(synced) == 2
    if os.path.exists("/proc/self/fd"):
        assert Path(synced[0]).parent == tmp_path and Path(synced[0]).name.startswith(".a.txt.")
        assert Path(synced[1]) == tmp_path


def test_failed_serialization_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    write_json_atomic({"v": 1}, target)
    with pytest.raises(TypeError):
        write_json_atomic({"v": _Unserializable()}, target)
    assert json.loads(target.read_text()) == {"v": 1}
    assert _leftovers(tmp_path) == []


def test_failure_mid_write_leaves_the_old_parquet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "t.parquet"
    write_parquet_atomic(pa.table({"a": [1, 2, 3]}), target)

    def half_then_fail(table: pa.Table, where: str) -> None:
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(storage.pq, "write_table", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(pa.table({"a": [9]}), target)
    monkeypatch.undo()
    assert pq.read_table(target).column("a").to_pylist() == [1, 2, 3]
    assert _leftovers(tmp_path) == []
