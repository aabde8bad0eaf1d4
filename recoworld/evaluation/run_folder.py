"""A run's output folder and its manifest: which run it holds, which parts are done, which files are its.

`RunFolder.open` writes `manifest.json` (atomically) before any result: the run's identity
(everything that determines its results, as plain values) and its fingerprint, the names of
the whole-run files it will write, and one record per part (for `simulate`, a recommender).
So a folder never holds two runs mixed:

- a rerun with the same identity resumes: a part whose files still have the size and
  SHA-256 recorded when it finished is kept; any other part (unfinished, damaged, emptied,
  deleted) is done again;
- a rerun with another identity is refused with one line that says what differs, unless
  `overwrite`: then every file the old manifest names is removed first, and nothing else
  (a user's notes, an LLM cache beside the results, stay);
- a folder with results but no manifest, or with another tool's `manifest.json` (a study
  checkpoint), is refused even with `overwrite`: nothing says which of its files are a run's.

A part's files are claimed in the manifest before they are written, so a crash at any
point leaves no file that the manifest does not name.

`FolderLock` keeps two processes out of one folder at a time: two runs started together
would otherwise both pass the manifest check and write over each other's results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recoworld.catalog import Catalog
from recoworld.errors import RecoWorldError
from recoworld.storage import write_json_atomic

MANIFEST = "manifest.json"

#: LLM settings that change how calls are made, not what they answer: a run (a simulate folder, a study
#: checkpoint) resumes under other values (a larger budget after `BudgetExceeded`, more requests in flight,
#: a cache file elsewhere).
LLM_RUNTIME_FIELDS = {"api_key", "concurrency", "cache", "cache_path", "price_input_per_mtok",
                      "price_output_per_mtok", "budget_usd", "budget_tokens", "budget_requests", "budget_ledger",
                      "max_fallback_rate", "fallback_window"}


class RunFolderError(RecoWorldError):
    """The output folder holds something this run must not mix with (or cannot tell apart)."""


class FolderLock:
    """An exclusive lock on an output folder, held for a whole run (`fcntl.flock` on its `FILE`).

    The kernel drops the lock when its holder exits, `kill -9` included, so a dead run never
    keeps a folder locked; the file stays, and names the latest holder for the next one's error."""

    FILE = ".recoworld.lock"

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def take(cls, path: Path, command: str, flag: str = "--out") -> FolderLock:
        """The lock on `path` (created if missing), or a `RunFolderError` naming the holder's PID."""
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / cls.FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "PID unknown"
            os.close(fd)
            raise RunFolderError(f"{flag} {path} is in use by another run ({holder}); wait for it to finish, "
                                 "or choose another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()}: recoworld {command}\n".encode(), 0)
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def fingerprint(identity: Mapping[str, Any]) -> str:
    """Short hash of an identity (plain JSON values), independent of key order."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def catalog_fingerprint(catalog: Catalog) -> str:
    """Hash of every item column and name table (not `metadata`, which records how it was built)."""
    h = hashlib.sha256()
    for f in dataclasses.fields(catalog):
        value = getattr(catalog, f.name)
        if f.name == "metadata" or value is None:
            continue
        h.update(f.name.encode())
        if isinstance(value, np.ndarray) and value.dtype.kind in "OUS":
            h.update("\x1f".join(map(str, value.ravel())).encode())
        elif isinstance(value, np.ndarray):
            h.update(f"{value.dtype.str}{value.shape}".encode())
            h.update(np.ascontiguousarray(value).tobytes())
        else:
            h.update(json.dumps(value).encode())
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def _show(value: Any, width: int = 48) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        text = ",".join(map(str, value))
    else:
        text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def describe_difference(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 4) -> str:
    """`seed 0 -> 1; agents random,greedy -> random`: the identity fields that differ (`config.` left out)."""
    a, b = ({k.removeprefix("config."): v for k, v in _flat(dict(d)).items()} for d in (old, new))
    keys = [k for k in [*a, *(k for k in b if k not in a)] if a.get(k) != b.get(k)]
    parts = [f"{k} {_show(a[k]) if k in a else '(none)'} -> {_show(b[k]) if k in b else '(none)'}"
             for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return "; ".join(parts) or "its fingerprint"


class RunFolder:
    """One run's output folder, held through its manifest."""

    def __init__(self, path: Path, manifest: dict[str, Any], resumed: bool) -> None:
        self.path = path
        self.manifest = manifest
        self.resumed = resumed  # the manifest came from an earlier run with the same identity

    # ------------------------------------------------------------------ open

    @classmethod
    def open(
        cls,
        path: str | Path,
        kind: str,
        identity: Mapping[str, Any],
        *,
        files: Iterable[str],
        part_dirs: Iterable[str] = (),
        overwrite: bool = False,
        inputs: Mapping[str, str] | None = None,
    ) -> RunFolder:
        """Resume the run in `path`, or start one there; see the module docstring.

        `files`: the whole-run files (relative paths) the run writes; `part_dirs`: folders
        that hold its parts, looked at only to tell whether a folder without a manifest
        already holds results. `inputs` (where the catalog and users came from, for people)
        are recorded but not compared: the identity covers their content.
        """
        path = Path(path)
        identity = json.loads(json.dumps(dict(identity), default=str))  # as it reads back from the manifest
        new: dict[str, Any] = {"kind": kind, "fingerprint": fingerprint(identity), "identity": identity,
               "inputs": dict(inputs or {}), "files": list(files), "parts": {}, "finished": False}
        old = cls._read(path, kind)
        if old is None:
            found = [f for f in new["files"] if (path / f).exists()]
            found += [str(p.relative_to(path)) for d in part_dirs for p in sorted((path / d).glob("*.parquet"))]
            if found:
                raise RunFolderError(
                    f"{path} holds results without a {MANIFEST} ({', '.join(found[:3])}"
                    f"{', ...' if len(found) > 3 else ''}), so they cannot be told apart from a new run's; "
                    "remove them or choose another output folder")
        elif old["fingerprint"] == new["fingerprint"] and not overwrite:
            folder = cls(path, {**new, "parts": old.get("parts", {})}, resumed=True)
            _clean_tmp(path, old)
            folder.save()
            return folder
        elif not overwrite:
            what = describe_difference({**old.get("identity", {}), **_inputs(old.get("inputs"))},
                                       {**identity, **_inputs(inputs)})
            raise RunFolderError(
                f"{path} holds another {kind} run ({what}); rerun with --overwrite to replace it, "
                "or choose another output folder")
        else:
            cls._remove(path, old)
        folder = cls(path, new, resumed=False)
        folder.save()
        return folder

    @staticmethod
    def _read(path: Path, kind: str) -> dict[str, Any] | None:
        file = path / MANIFEST
        if not file.exists():
            return None
        try:
            manifest = json.loads(file.read_text())
        except (OSError, ValueError) as err:
            raise RunFolderError(f"{file} cannot be read ({err}); remove the folder's results by hand "
                                 "or choose another output folder") from None
        if not isinstance(manifest, dict) or manifest.get("kind") != kind or "fingerprint" not in manifest:
            raise RunFolderError(f"{path} holds a {MANIFEST} that is not a {kind} run's (a study checkpoint?); "
                                 "choose another output folder")
        return manifest

    @classmethod
    def _remove(cls, path: Path, manifest: Mapping[str, Any]) -> None:
        """Every file `manifest` names (and their leftover temporaries); then folders left empty."""
        _clean_tmp(path, manifest)
        for rel in _owned(manifest):
            (path / rel).unlink(missing_ok=True)
        for parent in sorted({(path / rel).parent for rel in _owned(manifest)}, reverse=True):
            if parent != path:
                with contextlib.suppress(OSError):  # not empty: it holds something that is not the run's
                    parent.rmdir()

    # ------------------------------------------------------------------ parts

    def save(self) -> None:
        write_json_atomic(self.manifest, self.path / MANIFEST)

    def done(self, name: str) -> dict[str, Any] | None:
        """The record of part `name` if it finished and its files are intact, else None."""
        part = self.manifest["parts"].get(name)
        if part is None or part.get("status") != "complete":
            return None
        for key, rel in part["files"].items():
            file, want = self.path / rel, part["sha256"].get(key)
            try:
                if want is None or file.stat().st_size != part["bytes"][key] or file_digest(file) != want:
                    return None
            except OSError:
                return None
        return part

    def begin(self, name: str, files: Mapping[str, str]) -> None:
        """Claim part `name`'s files before writing them, so a crash leaves none unnamed."""
        self.manifest["parts"][name] = {"status": "running", "files": dict(files)}
        self.manifest["finished"] = False
        self.save()

    def finish(self, name: str, *, complete: bool = True, **info: Any) -> None:
        """Record part `name`'s written files (size, SHA-256); an incomplete part is redone on resume."""
        part = self.manifest["parts"][name]
        part["bytes"] = {k: (self.path / rel).stat().st_size for k, rel in part["files"].items()}
        part["sha256"] = {k: file_digest(self.path / rel) for k, rel in part["files"].items()}
        part.update(status="complete" if complete else "incomplete", **info)
        self.save()

    def finished(self) -> None:
        """All whole-run files are written: the folder holds one finished run."""
        self.manifest["finished"] = True
        self.save()


def _inputs(inputs: Mapping[str, str] | None) -> dict[str, Any]:
    return {f"input.{k}": v for k, v in (inputs or {}).items()}


def _owned(manifest: Mapping[str, Any]) -> list[str]:
    """Every file `manifest` names: the whole-run files and each part's."""
    owned = list(manifest.get("files", []))
    for part in manifest.get("parts", {}).values():
        owned += list(part.get("files", {}).values())
    return owned


def _clean_tmp(path: Path, manifest: Mapping[str, Any]) -> None:
    """Temporaries of the run's atomic writes that a killed process left behind."""
    for rel in _owned(manifest):
        target = path / rel
        if target.parent.is_dir():
            for tmp in target.parent.glob(f".{target.name}.*.tmp"):
                tmp.unlink(missing_ok=True)
