"""Parquet files concatenated without decoding them: their pages copied byte for byte, their footers merged.

A study's `trajectories.parquet` is its shards' parts one after the other. Decoding each part to Arrow and
encoding it again (a `pyarrow.parquet.ParquetWriter`) costs the driver about 50 us of CPU per user-day on
an idle core (`experiments/bench_study.py`): two hours for a million users over 30 days with five
recommenders, more than the whole study's target. A Parquet file is its column chunks, then a footer (a
Thrift `FileMetaData`, compact protocol) that lists each row group's chunks by their byte offsets in the
file. So the parts' data is appended as bytes (`ParquetConcat.append`), and the footer written at the end
(`close`) is the first part's with every part's row groups, their offsets moved by where the part's data
now lies. Reading the file gives exactly the parts' rows in order, one row group per part's row group.

Only the fields that hold file offsets are changed; every other field is written back as it was read, so
statistics, encodings and the Arrow schema stay the parts' own. Parts must share one schema (as
`pyarrow.concat_tables` requires) and carry no page index, bloom filter or encryption (pyarrow writes none by
default); anything else is refused, naming the part.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"PAR1"
# Compact-protocol types.
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)
# Field ids (parquet.thrift): FileMetaData, RowGroup, ColumnChunk, ColumnMetaData.
_FILE_SCHEMA, _FILE_ROWS, _FILE_ROW_GROUPS = 2, 3, 4
_GROUP_COLUMNS, _GROUP_OFFSET, _GROUP_ORDINAL = 1, 5, 7
_CHUNK_PATH, _CHUNK_OFFSET, _CHUNK_META, _CHUNK_OFFSET_INDEX, _CHUNK_COLUMN_INDEX, _CHUNK_CRYPTO = 1, 2, 3, 4, 6, 8
_META_OFFSETS = (9, 10, 11)  # data_page_offset, index_page_offset, dictionary_page_offset
_META_BLOOM = 14

Struct = list[tuple[int, int, Any]]  # (field id, type, value), in the order read


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self) -> int:
        out = shift = 0
        while True:
            b = self.byte()
            out |= (b & 0x7F) << shift
            if not b & 0x80:
                return out
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, kind: int) -> Any:
        if kind in (_TRUE, _FALSE, _BYTE):  # a bool in a collection is a byte of its own
            return self.byte()
        if kind in (_I16, _I32, _I64):
            return self.zigzag()
        if kind == _DOUBLE:
            self.pos += 8
            return self.data[self.pos - 8 : self.pos]
        if kind == _BINARY:
            n = self.varint()
            self.pos += n
            return self.data[self.pos - n : self.pos]
        if kind in (_LIST, _SET):
            head = self.byte()
            size, elem = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            return elem, [self.value(elem) for _ in range(size)]
        if kind == _MAP:
            size = self.varint()
            types = self.byte() if size else 0
            return types, [(self.value(types >> 4), self.value(types & 0x0F)) for _ in range(size)]
        if kind == _STRUCT:
            return self.struct()
        raise ValueError(f"unknown Thrift compact type {kind}")

    def struct(self) -> Struct:
        fields: Struct = []
        last = 0
        while True:
            head = self.byte()
            if head == 0:
                return fields
            kind, delta = head & 0x0F, head >> 4
            fid = last + delta if delta else self.zigzag()
            value = True if kind == _TRUE else False if kind == _FALSE else self.value(kind)
            fields.append((fid, kind, value))
            last = fid


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def varint(self, n: int) -> None:
        while n > 0x7F:
            self.out.append((n & 0x7F) | 0x80)
            n >>= 7
        self.out.append(n)

    def zigzag(self, n: int) -> None:
        self.varint((n << 1) ^ (n >> 63))

    def value(self, kind: int, value: Any) -> None:
        if kind in (_TRUE, _FALSE, _BYTE):
            self.out.append(value)
        elif kind in (_I16, _I32, _I64):
            self.zigzag(value)
        elif kind == _DOUBLE:
            self.out += value
        elif kind == _BINARY:
            self.varint(len(value))
            self.out += value
        elif kind in (_LIST, _SET):
            elem, items = value
            if len(items) < 15:
                self.out.append(len(items) << 4 | elem)
            else:
                self.out.append(0xF0 | elem)
                self.varint(len(items))
            for item in items:
                self.value(elem, item)
        elif kind == _MAP:
            types, pairs = value
            self.varint(len(pairs))
            if pairs:
                self.out.append(types)
            for k, v in pairs:
                self.value(types >> 4, k)
                self.value(types & 0x0F, v)
        else:
            self.struct(value)

    def struct(self, fields: Struct) -> None:
        last = 0
        for fid, kind, value in fields:
            if 0 < fid - last <= 15:
                self.out.append((fid - last) << 4 | kind)
            else:
                self.out.append(kind)
                self.zigzag(fid)
            if kind not in (_TRUE, _FALSE):
                self.value(kind, value)
            last = fid
        self.out.append(0)


def _encode(kind: int, value: Any) -> bytes:
    w = _Writer()
    w.value(kind, value)
    return bytes(w.out)


def _moved(fields: Struct, ids: tuple[int, ...], delta: int) -> Struct:
    return [(fid, kind, value + delta if fid in ids else value) for fid, kind, value in fields]


def _moved_chunk(chunk: Struct, delta: int, part: Path) -> Struct:
    out: Struct = []
    for fid, kind, value in chunk:
        if fid in (_CHUNK_PATH, _CHUNK_OFFSET_INDEX, _CHUNK_COLUMN_INDEX, _CHUNK_CRYPTO):
            raise ValueError(f"{part}: a column chunk with an external file, page index or encryption")
        if fid == _CHUNK_OFFSET:
            value += delta
        elif fid == _CHUNK_META:
            if any(f == _META_BLOOM for f, _, _ in value):
                raise ValueError(f"{part}: a column chunk with a bloom filter")
            value = _moved(value, _META_OFFSETS, delta)
        out.append((fid, kind, value))
    return out


def _field(fields: Struct, fid: int) -> Any:
    return next(value for f, _, value in fields if f == fid)


class ParquetConcat:
    """One Parquet file written as the concatenation of others, appended one at a time (see the module
    docstring). The footer keeps one encoded row group per part's row group, a few KB each."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.sink.write(MAGIC)
        self.pos = len(MAGIC)
        self.head: Struct | None = None  # the first part's footer, its row groups left out
        self.schema = b""
        self.rows = 0
        self.groups: list[bytes] = []

    def append(self, part: Path) -> None:
        """Copy `part`'s pages to the end of the file and keep its row groups, moved to where they now lie."""
        with part.open("rb") as fh:
            fh.seek(-8, 2)
            end = fh.tell()
            size, magic = struct.unpack("<I4s", fh.read(8))
            if magic != MAGIC:
                raise ValueError(f"{part} is not a Parquet file")
            start = end - size
            fh.seek(start)
            meta = _Reader(fh.read(size)).struct()
            schema = _encode(_LIST, _field(meta, _FILE_SCHEMA))
            if self.head is None:
                self.head, self.schema = [f for f in meta if f[0] not in (_FILE_ROWS, _FILE_ROW_GROUPS)], schema
            elif schema != self.schema:
                raise ValueError(f"{part}: its schema differs from the first part's")
            delta = self.pos - len(MAGIC)
            for group in _field(meta, _FILE_ROW_GROUPS)[1]:
                moved: Struct = []
                for fid, kind, value in group:
                    if fid == _GROUP_COLUMNS:
                        value = (value[0], [_moved_chunk(c, delta, part) for c in value[1]])
                    elif fid == _GROUP_OFFSET:
                        value += delta
                    elif fid == _GROUP_ORDINAL:
                        value = len(self.groups)
                    moved.append((fid, kind, value))
                self.groups.append(_encode(_STRUCT, moved))
            self.rows += _field(meta, _FILE_ROWS)
            fh.seek(len(MAGIC))
            left = start - len(MAGIC)
            while left > 0:  # the pages, in pieces: a part is never whole in memory
                piece = fh.read(min(left, 1 << 24))
                self.sink.write(piece)
                left -= len(piece)
            self.pos += start - len(MAGIC)

    def close(self) -> None:
        """Write the merged footer (nothing to write without a part: an empty file is no Parquet file)."""
        if self.head is None:
            raise ValueError("no part to concatenate")
        fields = [*self.head, (_FILE_ROWS, _I64, self.rows), (_FILE_ROW_GROUPS, _LIST, None)]
        fields.sort(key=lambda f: f[0])
        w = _Writer()
        last = 0
        for fid, kind, value in fields:  # `_Writer.struct`, with the row groups spliced in already encoded
            w.out.append((fid - last) << 4 | kind if 0 < fid - last <= 15 else kind)
            if not 0 < fid - last <= 15:
                w.zigzag(fid)
            if fid == _FILE_ROW_GROUPS:
                if len(self.groups) < 15:
                    w.out.append(len(self.groups) << 4 | _STRUCT)
                else:
                    w.out.append(0xF0 | _STRUCT)
                    w.varint(len(self.groups))
                for group in self.groups:
                    w.out += group
            elif kind not in (_TRUE, _FALSE):
                w.value(kind, value)
            last = fid
        w.out.append(0)
        self.sink.write(bytes(w.out))
        self.sink.write(struct.pack("<I", len(w.out)) + MAGIC)

