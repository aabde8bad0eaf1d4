"""A calibrated world as the input of other commands: `calibrated: DIR` in training configs and study specs.

The calibration's `world.yaml` is the base, and the config's own `world:` keys are laid on
top, so a study can still change the horizon or the slate size of a calibrated world. The
catalog and the profiles come from the calibration folder. Remote workers (RLlib env
runners, Ray study tasks) receive only the resolved path and load the folder once per
process.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from recoworld.calibration.calibrated import CalibratedWorld, load_calibration
from recoworld.config import deep_merge


@functools.cache
def cached_calibration(path: str) -> CalibratedWorld:
    """`load_calibration`, once per process and folder (its catalog is the expensive part)."""
    return load_calibration(path)


def with_calibrated_world(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with `calibrated` made absolute and `world` based on the calibration's.

    A relative path is taken from the working directory; config files make theirs relative
    to the file first (`config.relative_to_file`)."""
    if not isinstance(data, dict) or data.get("calibrated") is None:
        return data
    path = Path(data["calibrated"]).expanduser().resolve()
    world = data.get("world") or {}
    if hasattr(world, "model_dump"):
        world = world.model_dump(exclude_unset=True)
    if not isinstance(world, dict):
        return data  # field validation reports the bad `world`
    base = cached_calibration(str(path)).world.model_dump()
    return {**data, "calibrated": path, "world": deep_merge(base, world)}
