"""The worlds a run is made of, when a real log or a calibrated world is involved.

What `simulate`, `fidelity`, `validate` and `transfer` share, out of the command line so that it is written
once and tested directly: a calibrated world loaded with a config merged on top, the real log split exactly as
that calibration split it (so held-out interactions are ones it never saw), the catalog and users a simulation
runs on, and the worlds a transfer judges.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from recoworld.calibration.calibrated import CalibratedWorld, CalibrationConfig, calibrate, load_calibration
from recoworld.catalog import Catalog, cached_catalog
from recoworld.config import WorldConfig, deep_merge, load_config
from recoworld.data import DataConfig, RealWorld, prepare_world
from recoworld.data.items import user_halves
from recoworld.errors import ConfigError, RecoWorldError
from recoworld.evaluation.transfer import SimulatedWorld
from recoworld.population import PopulationSpec, UserProfile


def load_calibrated(path: Path, config: Path | None = None, **overrides: Any) -> CalibratedWorld:
    """The calibrated world in `path` with its world.yaml; what `config` sets is merged on top (as `train` and
    `study` merge their config's world), and `overrides` (None = keep) on top of both."""
    calibrated = load_calibration(path)
    fitted = calibrated.world.model_dump()
    calibrated.world = load_config(
        WorldConfig,
        config or path / "world.yaml",
        "world config",
        prepare=lambda data, _file: deep_merge(fitted, data),
        **overrides,
    )
    return calibrated


def split_as_calibrated(data: DataConfig, fitted: CalibratedWorld | None) -> DataConfig:
    """`data` with the split and held-out share its calibration used (unchanged without one)."""
    if fitted is None:
        return data
    fit_data = fitted.report.get("data", {})
    return data.model_copy(update={k: fit_data[k] for k in ("split", "test_fraction") if k in fit_data})


def real_world_for(data: DataConfig, fitted: CalibratedWorld | None, source: Path | None = None) -> RealWorld:
    """The real log prepared for a calibrated world (or none): split as it was calibrated, on the same items.

    Raises:
        RecoWorldError: `fitted` (read from `source`) was calibrated on other items than `data.path` holds.
    """
    real = prepare_world(split_as_calibrated(data, fitted))
    if fitted is not None and list(fitted.catalog.item_ids) != list(real.catalog.item_ids):
        raise RecoWorldError(f"{source} was calibrated on other items than {data.path}; calibrate on {data.path}")
    return real


def global_test_fraction(fitted: CalibratedWorld, source: Path | None, default: float) -> float:
    """The held-out share of a calibration fitted with one global cutoff (the one a transfer must keep: a later
    cutoff would judge the world on what it was fitted to); a per-user split is an error naming `source`."""
    fit_data = fitted.report.get("data", {})
    if fit_data.get("split") != "global":
        raise ConfigError(
            f"--calibrated {source}: it was fitted on a {fit_data.get('split', 'unknown')} split; "
            "transfer needs a global one (recoworld calibrate --split global), or leave --calibrated "
            "out"
        )
    return float(fit_data.get("test_fraction", default))


def simulation_inputs(
    world: WorldConfig,
    spec: PopulationSpec,
    *,
    catalog: Catalog | None = None,
    real: RealWorld | None = None,
    fitted: CalibratedWorld | None = None,
    population: str | None = None,
) -> tuple[Catalog | None, list[UserProfile] | None]:
    """The catalog and users a simulation runs on: a calibrated world's, else a real log's, else `catalog` (None:
    the world's synthetic one) with users drawn from `spec`. `population` names where `spec` came from: its
    topics must be in the catalog. A catalog smaller than the candidates of a turn is an error."""
    profiles = None
    if real is not None:
        catalog, profiles = real.catalog, real.profiles
    if fitted is not None:
        catalog, profiles = fitted.catalog, fitted.profiles
    if population is not None:
        spec.check_topics(catalog if catalog is not None else cached_catalog(world.catalog), population)
    if catalog is not None and world.n_candidates > len(catalog):
        raise RecoWorldError(
            f"--candidates {world.n_candidates} (candidates per turn) exceeds the catalog size "
            f"{len(catalog)}; give --candidates {len(catalog)} or fewer"
        )
    return catalog, profiles


def transfer_worlds(
    real: RealWorld,
    calibration: CalibrationConfig,
    fitted: CalibratedWorld | None,
    circularity: bool,
    progress: Callable[[str], None] = lambda _: None,
) -> list[SimulatedWorld]:
    """The worlds a transfer judges on `real` (prepared from `calibration.data`): the calibrated one (`fitted`,
    or fitted here on the past), the default world, and with `circularity` a world whose learned (mf)
    representation saw only one half of the users, judged on the other half. A representation not learned from
    users needs no such check: `progress` says it was skipped."""
    if fitted is None:
        fitted = calibrate(calibration, on_stage=lambda stage: progress(f"calibrating on the past: {stage}"))
    default = WorldConfig(catalog={"n_items": len(real.catalog)})
    worlds = [
        SimulatedWorld("calibrated", fitted.world, fitted.catalog, fitted.profiles),
        SimulatedWorld("default", default, real.catalog, real.profiles),
    ]
    embedding = real.catalog.metadata.get("embedding", "")
    if circularity and "mf" in embedding.split("+"):
        data = calibration.data
        half = data.model_copy(update={"representation": data.representation.model_copy(update={"mf_user_half": 0})})
        apart = calibrate(calibration.model_copy(update={"data": half}),
                          on_stage=lambda stage: progress(f"calibrating, representation from half the users: {stage}"))
        others = real.split.train["user_id"].unique()
        judged = frozenset(u for u, h in zip(others, user_halves(others, data.representation.seed)) if h == 1)
        worlds.insert(
            1, SimulatedWorld("calibrated, representation apart", apart.world, apart.catalog, apart.profiles, judged)
        )
    elif circularity:
        progress(f"circularity check skipped: the {embedding} representation is not learned from users")
    return worlds
