"""Record/replay cache of model replies in SQLite.

The key is a SHA-256 over everything that determines a reply: backend, model, the
structured-output mode actually used, messages, schema or tools, and sampling parameters.
Never the API key or the base URL. Values are validated raw replies only (and, per model,
the structured-output mode `auto` detected, so an offline replay needs no probe). Failures
are never recorded: an outage or a bad reply must not outlive the run that saw it.

A file that is not an SQLite database, or a damaged one, stops the run (`CacheUnreadable`)
naming it: it is never overwritten or moved, since it may be someone's only copy of their
replies, or not a cache at all.

A study on Ray keeps its cache on the driver, whose disk other nodes do not see: it ships a
`snapshot` to every shard's task, the task's backends replay from and record into a copy of
their own, and the task hands back what they recorded (`recorded_after` its `last_row`),
which the driver `merge`s (`recoworld.studies.shared_llm`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recoworld.llm.config import CacheMode
from recoworld.llm.errors import CacheUnreadable

#: Cache entries as they travel between processes: (key, the reply's JSON text).
Row = tuple[str, str]

#: Seconds a cache connection waits for another process's lock (writes, and opening a fresh file).
_BUSY_S = 30.0


def cache_key(**parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Thread-safe; opens the file lazily so a backend holding it can be pickled.

    `mode`: write (replay hits, record misses), read and replay (replay hits, record nothing;
    the backend never calls the model under replay) or off."""

    def __init__(self, path: str | Path, mode: CacheMode) -> None:
        self.path = Path(path)
        self.mode = mode
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "mode": self.mode}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["mode"])  # type: ignore[misc]

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        """SQLite's own errors about the file (not a database, a malformed image) as one clear error."""
        try:
            yield
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as err:
            raise CacheUnreadable(
                f"llm.cache_path {self.path} is not a readable LLM cache ({err}); move it aside "
                f"(mv '{self.path}' '{self.path}.damaged') and rerun to start a new cache there, or point "
                "llm.cache_path (--llm-cache off to run without one) elsewhere"
            ) from None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=_BUSY_S)
            # Switching a new file to WAL takes a lock SQLite's busy timeout does not wait for: study
            # shards that open a fresh cache together retry for as long as that timeout would.
            deadline = time.monotonic() + _BUSY_S
            while True:
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    break
                except sqlite3.OperationalError as err:
                    if "locked" not in str(err) or time.monotonic() > deadline:
                        conn.close()
                        raise
                    time.sleep(0.05)
                except sqlite3.DatabaseError:
                    conn.close()
                    raise
            self._conn = conn
        return self._conn

    def get(self, key: str) -> dict[str, Any] | None:
        if self.mode == "off" or (self.mode in ("read", "replay") and not self.path.exists()):
            return None
        with self._lock, self._guarded():
            row = self._db().execute("SELECT value FROM replies WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self.mode != "write":
            return
        with self._lock, self._guarded():
            db = self._db()
            db.execute("INSERT OR REPLACE INTO replies (key, value) VALUES (?, ?)", (key, json.dumps(value)))
            db.commit()

    def snapshot(self) -> bytes | None:
        """The whole cache as the bytes of one SQLite file (None when there is no file yet), taken with SQLite's
        backup, so it is consistent while others write."""
        if not self.path.exists():
            return None
        with self._lock, self._guarded(), tempfile.TemporaryDirectory(prefix="recoworld-cache-") as tmp:
            copy = sqlite3.connect(Path(tmp) / "snapshot.sqlite")
            try:
                self._db().backup(copy)
            finally:
                copy.close()
            return (Path(tmp) / "snapshot.sqlite").read_bytes()

    def last_row(self) -> int:
        """The number of the newest entry (0 when empty): what `recorded_after` counts from."""
        if not self.path.exists():
            return 0
        with self._lock, self._guarded():
            return int(self._db().execute("SELECT COALESCE(MAX(rowid), 0) FROM replies").fetchone()[0])

    def recorded_after(self, row: int) -> list[Row]:
        """The entries recorded since `last_row` gave `row` (SQLite numbers each new or replaced entry past
        every earlier one)."""
        if not self.path.exists():
            return []
        with self._lock, self._guarded():
            return list(self._db().execute("SELECT key, value FROM replies WHERE rowid > ? ORDER BY rowid", (row,)))

    def merge(self, rows: list[Row]) -> None:
        """Record entries another cache recorded (`recorded_after`), as `put` would: only in mode write."""
        if self.mode != "write" or not rows:
            return
        with self._lock, self._guarded():
            db = self._db()
            db.executemany("INSERT OR REPLACE INTO replies (key, value) VALUES (?, ?)", rows)
            db.commit()

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        with self._lock, self._guarded():
            return int(self._db().execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
