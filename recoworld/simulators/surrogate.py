"""`user_backend: surrogate`: a world's users played by a distilled surrogate (`recoworld distill --out DIR`).

    world = load_world("world.yaml")   # user_backend: surrogate, surrogate: runs/distilled

`--calibrated DIR` replays the distill run's own users and catalog; the shorthand instead keeps the world's own
catalog and population and gives every drawn user what distill fitted: the choice, dynamics and return blocks of
DIR/world.yaml (replacing the world's own), and per user the favourite-topic rank weights and patience of
DIR/calibration.json (`surrogate_profile`). The choice block carries the fitted tastes (`choice.taste`:
topic, minutes and persona x attribute effects), which every drawn user plays through its own persona
(`recoworld.simulators.choice.Taste`). So one LLM run's surrogate can drive any population, at parametric speed.
The neural choice model (`distill --neural`) is a teacher-forced scorer, not a simulator, and is not used here.

It lives among the simulators, not in `recoworld.calibration` where the fit is made, because the world's views build
their users from it (`recoworld.envs.world.build_users`), and the world core sits below calibration: only the
fit's files on disk flow from `recoworld distill` to here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig, load_config
from recoworld.errors import ConfigError
from recoworld.population import UserProfile
from recoworld.simulators.parametric import ParametricUsers


class Surrogate(BaseModel):
    """What a distilled folder gives the users of another world (read from world.yaml and calibration.json)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    folder: Path
    world: WorldConfig  # its choice, dynamics and returns are the fitted ones
    favourite_rank_weights: tuple[float, ...] | None
    patience: int | None


@functools.cache
def _load(folder: Path, stamp: tuple[float, float]) -> Surrogate:
    report = json.loads((folder / "calibration.json").read_text())
    if report.get("source") != "recoworld distill":
        raise ConfigError(f"surrogate: {folder} was not written by `recoworld distill` (calibration.json source "
                          f"{report.get('source')!r}); use --calibrated for a calibrated world")
    weights = report.get("favourite_rank_weights")
    try:
        return Surrogate(folder=folder, world=load_config(WorldConfig, folder / "world.yaml", "world config"),
                         favourite_rank_weights=None if weights is None else tuple(weights),
                         patience=(report.get("patience") or {}).get("value"))
    except (ValidationError, ConfigError) as err:
        raise ConfigError(f"surrogate: {folder} holds an invalid distilled world: {err}") from err


def load_surrogate(folder: str | Path) -> Surrogate:
    """The distilled surrogate in `folder` (cached while its files are unchanged); a ConfigError naming the
    `surrogate` field when the folder is missing or was not written by `recoworld distill`."""
    root = Path(folder)
    missing = [f for f in ("world.yaml", "calibration.json") if not (root / f).is_file()]
    if missing:
        raise ConfigError(f"surrogate: {root} is not a distilled folder (missing {', '.join(missing)}); give the "
                          "--out folder of `recoworld distill`")
    return _load(root.resolve(), tuple((root / f).stat().st_mtime for f in ("world.yaml", "calibration.json")))


def surrogate_profile(profile: UserProfile, rank_weights: Sequence[float] | None,
                      patience: int | None) -> UserProfile:
    """A drawn profile as the distilled surrogate plays it: favourite topics weighted by rank (`rank_reweighted`;
    None keeps them), the fitted patience (None keeps the profile's) and return propensity 0.5, the level the return
    model is fitted at (`recoworld.calibration.returns`). Applied to the run's own users by `distill`, and to any
    freshly drawn population by `SurrogateUsers`."""
    if rank_weights is not None:
        profile = rank_reweighted(profile, np.asarray(rank_weights, dtype=np.float64))
    return profile.model_copy(update={"return_propensity": 0.5} | ({} if patience is None else {"patience": patience}))


def rank_reweighted(profile: UserProfile, weights: np.ndarray) -> UserProfile:
    """The profile with its favourite topics weighted by rank (`weights[r]` for the r-th favourite, as
    `recoworld.calibration.distill` fits them); unchanged if none is left."""
    topics = {t: float(weights[r]) for r, t in enumerate(profile.topic_interests)
              if r < len(weights) and weights[r] > 0}
    if not topics or profile.interest_embedding is not None:
        return profile
    return profile.model_copy(update={"topic_interests": {t: v / sum(topics.values()) for t, v in topics.items()}})


class SurrogateUsers(ParametricUsers):
    """The parametric user with a surrogate's fitted blocks; every profile it is reset with is adapted
    (`surrogate_profile`) first."""

    def __init__(self, catalog: Catalog, surrogate: Surrogate) -> None:
        fitted = surrogate.world
        super().__init__(catalog, fitted.choice, fitted.dynamics, fitted.returns)
        self.surrogate = surrogate

    def reset(self, profiles: Sequence[UserProfile], rows: np.ndarray | None = None) -> None:
        s = self.surrogate
        super().reset([surrogate_profile(p, s.favourite_rank_weights, s.patience) for p in profiles], rows)


def surrogate_users(catalog: Catalog, config: WorldConfig) -> SurrogateUsers:
    """The users of a world with `user_backend: surrogate` (`recoworld.envs.world.build_users`)."""
    if config.surrogate is None:
        raise ConfigError("surrogate: user_backend 'surrogate' needs `surrogate: DIR`, the --out of "
                          "`recoworld distill`")
    return SurrogateUsers(catalog, load_surrogate(config.surrogate))
