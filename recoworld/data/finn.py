"""The FINN.no slate format: slates shown, and what (if anything) was clicked, step by step.

Eide, Leslie & Frigessi (2022) released 37M slate interactions from FINN.no as `data.npz`
(2.3M users x 20 steps, slates of up to 25 items). The same arrays are the common
format the slate Thompson-sampling recommender trains on, so RecoWorld trajectories are
converted into it (`from_trajectories`) and can be written out (`save_finn`).

| field              | shape     | meaning                                                        |
|--------------------|-----------|----------------------------------------------------------------|
| `userId`           | (U,)      | user id                                                        |
| `click`            | (U, T)    | clicked item; 0 = padding (no step), 1 = no click, 2 = unknown  |
| `click_idx`        | (U, T)    | position of the clicked item in the slate (0 = the no-click slot) |
| `slate_lengths`    | (U, T)    | items in the slate, the no-click slot included                  |
| `slate`            | (U, T, S) | item indices shown; slot 0 holds 1 (no click), 0 pads           |
| `interaction_type` | (U, T)    | 0 undefined, 1 search, 2 recommendation                         |

Item indices 0, 1 and 2 are reserved (pad, no click, unknown); real items start at 3, so
catalog item `i` is index `i + ITEM_OFFSET`. FINN's `itemattr.npz` (field `category`)
gives each item's group; `load_item_groups` reads it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recoworld.errors import ConfigError
from recoworld.storage import write_atomic

PAD, NO_CLICK, UNKNOWN = 0, 1, 2
ITEM_OFFSET = 3
RECOMMENDATION = 2
FIELDS = ("userId", "click", "click_idx", "slate_lengths", "slate", "interaction_type")

#: One step: the slate row (no-click slot first), the clicked item index, its slot.
Event = tuple[np.ndarray, int, int]


@dataclass(frozen=True)
class SlateInteractions:
    """Slate interactions in the FINN.no layout (see the module docstring)."""

    userId: np.ndarray  # the FINN field name
    click: np.ndarray
    click_idx: np.ndarray
    slate_lengths: np.ndarray
    slate: np.ndarray
    interaction_type: np.ndarray

    def __post_init__(self) -> None:
        if self.slate.ndim != 3:
            raise ConfigError(f"FINN field 'slate' must be (users, steps, slate), got shape {self.slate.shape}")
        u, t, s = self.slate.shape
        for name, shape in (("userId", (u,)), ("click", (u, t)), ("click_idx", (u, t)),
                            ("slate_lengths", (u, t)), ("interaction_type", (u, t))):
            got = getattr(self, name).shape
            if got != shape:
                raise ConfigError(f"FINN field {name!r} must have shape {shape} to match 'slate', got {got}")
        if (self.click_idx < 0).any() or (self.click_idx >= s).any():
            raise ConfigError(f"FINN field 'click_idx' must lie in [0, {s}), got values in "
                              f"[{self.click_idx.min()}, {self.click_idx.max()}]")
        if (self.slate < 0).any() or (self.click < 0).any():
            raise ConfigError("FINN fields 'slate' and 'click' must hold item indices >= 0")

    @property
    def n_items(self) -> int:
        """Size of the item index space, the reserved indices 0..2 included."""
        return int(max(self.slate.max(initial=0), self.click.max(initial=0), ITEM_OFFSET - 1)) + 1

    @property
    def observed(self) -> np.ndarray:
        """(U, T) steps that carry a usable observation: not padding and not an unknown click."""
        return (self.click != PAD) & (self.click != UNKNOWN)

    def __len__(self) -> int:
        return len(self.userId)

    def subset(self, rows: np.ndarray) -> SlateInteractions:
        return SlateInteractions(*(getattr(self, f)[rows] for f in FIELDS))


def load_finn(path: str | os.PathLike[str]) -> SlateInteractions:
    """Read `data.npz` (or the folder holding it), checking every field and shape."""
    path = Path(path)
    if path.is_dir():
        path = path / "data.npz"
    if not path.exists():
        raise FileNotFoundError(f"FINN data file not found: {path}")
    with np.load(path) as npz:
        missing = [f for f in FIELDS if f not in npz.files]
        if missing:
            raise ConfigError(f"{path} lacks FINN fields {missing}; it has {sorted(npz.files)}")
        arrays = {f: np.asarray(npz[f]) for f in FIELDS}
    for name in FIELDS:
        if arrays[name].dtype.kind not in "iu":
            raise ConfigError(f"FINN field {name!r} in {path} must be integer, got dtype {arrays[name].dtype}")
    return SlateInteractions(**{f: arrays[f].astype(np.int64) for f in FIELDS})


def load_item_groups(path: str | os.PathLike[str], n_items: int) -> np.ndarray:
    """(n_items,) group of each item from FINN's `itemattr.npz` (field `category`)."""
    path = Path(path)
    if path.is_dir():
        path = path / "itemattr.npz"
    with np.load(path) as npz:
        if "category" not in npz.files:
            raise ConfigError(f"{path} lacks the field 'category'; it has {sorted(npz.files)}")
        category = np.asarray(npz["category"]).astype(np.int64)
    if len(category) < n_items:
        raise ConfigError(f"{path}: 'category' covers {len(category)} items, the data indexes {n_items}")
    return category[:n_items]


def save_finn(data: SlateInteractions, path: str | os.PathLike[str]) -> Path:
    """Write `data.npz` atomically, readable by `load_finn` and by FINN's own loaders."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f: getattr(data, f) for f in FIELDS})
    return write_atomic(path, buf.getvalue())


def turn_events(items: np.ndarray, reactions: np.ndarray) -> list[Event]:
    """One RecoWorld turn as FINN steps.

    The slate is what the user actually reviewed (unseen slots are not exposures). Each
    click becomes one step over that slate, in slate order, so the user state moves
    through every clicked item; a turn without clicks is one no-click step.
    """
    seen = reactions >= 0
    row = np.concatenate([[NO_CLICK], np.asarray(items)[seen] + ITEM_OFFSET]).astype(np.int64)
    slots = np.flatnonzero(reactions[seen] >= 1) + 1
    if len(slots) == 0:
        return [(row, NO_CLICK, 0)]
    return [(row, int(row[s]), int(s)) for s in slots]


def pack_events(sequences: Sequence[Sequence[Event]], width: int, max_steps: int,
                user_ids: Sequence[int] | None = None) -> SlateInteractions:
    """Pad event sequences into FINN arrays, cutting each into windows of `max_steps` steps.

    `width` is the slate width with the no-click slot. Windows restart the user state,
    matching recommenders that read only their last `max_steps` steps.
    """
    windows: list[Sequence[Event]] = []
    owners: list[int] = []
    for u, seq in enumerate(sequences):
        for start in range(0, len(seq), max_steps):
            windows.append(seq[start : start + max_steps])
            owners.append(u if user_ids is None else int(user_ids[u]))
    n, t = len(windows), max((len(w) for w in windows), default=1)
    slate = np.zeros((n, t, width), dtype=np.int64)
    click = np.zeros((n, t), dtype=np.int64)
    click_idx = np.zeros((n, t), dtype=np.int64)
    for i, window in enumerate(windows):
        for j, (row, item, slot) in enumerate(window):
            if len(row) > width:
                raise ConfigError(f"a slate of {len(row)} slots (no-click included) exceeds width={width}")
            slate[i, j, : len(row)] = row
            click[i, j], click_idx[i, j] = item, slot
    lengths = (slate != PAD).sum(axis=2)
    kind = np.where(click != PAD, RECOMMENDATION, 0)
    return SlateInteractions(np.asarray(owners, dtype=np.int64), click, click_idx, lengths, slate, kind)


def from_trajectories(trajectories: pd.DataFrame, max_steps: int = 50) -> SlateInteractions:
    """Logged RecoWorld trajectories (the Parquet of `recoworld.evaluation.simulation`) in FINN format.

    Needs the columns user_id, step, position, item and reaction; an episode is one
    (recommender, user_id, episode_seed) group, whichever of those columns exist.
    """
    need = ["user_id", "step", "position", "item", "reaction"]
    missing = [c for c in need if c not in trajectories.columns]
    if missing:
        raise ConfigError(f"trajectories lack columns {missing}; got {list(trajectories.columns)}")
    keys = [c for c in ("recommender", "user_id", "episode_seed") if c in trajectories.columns]
    df = trajectories.sort_values([*keys, "step", "position"], kind="stable")
    width = int(df.groupby([*keys, "step"]).size().max()) + 1 if len(df) else 2
    sequences: list[list[Event]] = []
    for _, episode in df.groupby(keys, sort=False):
        events: list[Event] = []
        for _, turn in episode.groupby("step", sort=True):
            events.extend(turn_events(turn["item"].to_numpy(), turn["reaction"].to_numpy()))
        sequences.append(events)
    return pack_events(sequences, width, max_steps)
