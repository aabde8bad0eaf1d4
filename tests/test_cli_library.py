"""What the commands do lives in the library: the LLM flags' one rule, a calibrated world and the split it keeps,
the catalog and users a simulation runs on, the worlds a transfer judges. Called here directly, not through
the command line (which tests/test_cli_*.py cover)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from recoworld.calibration.calibrated import CalibratedWorld, CalibrationConfig, save_calibration
from recoworld.calibration.worlds import (
    global_test_fraction,
    load_calibrated,
    real_world_for,
    simulation_inputs,
    split_as_calibrated,
    transfer_worlds,
)
from recoworld.cli import app
from recoworld.cli.options import llm_overrides
from recoworld.config import WorldConfig
from recoworld.data import DataConfig, RealWorld, prepare_world
from recoworld.data.reference_log import write_reference_log
from recoworld.errors import ConfigError, RecoWorldError
from recoworld.evaluation.fidelity import FidelityConfig, eval_population, evaluate
from recoworld.evaluation.fidelity_run import fidelity_runs, write_fidelity
from recoworld.evaluation.llm_run import llm_ready
from recoworld.population import PopulationSpec


def test_the_version_is_the_installed_distributions() -> None:
    import recoworld

    assert recoworld.__version__ == version("recoworld")
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"recoworld {version('recoworld')}"
    module = subprocess.run([sys.executable, "-m", "recoworld", "--version"], capture_output=True, text=True)
    assert module.returncode == 0 and module.stdout.strip() == f"recoworld {version('recoworld')}", module.stderr


def test_llm_base_url_selects_openai_and_contradicting_local_names_the_flag() -> None:
    assert llm_overrides() is None
    assert llm_overrides(base_url="http://h/v1") == {"backend": "openai", "base_url": "http://h/v1"}
    assert llm_overrides("openai", "http://h/v1", "m") == {"backend": "openai", "base_url": "http://h/v1", "model": "m"}
    assert llm_overrides(model="gemma.gguf", cache="off") == {"model": "gemma.gguf", "cache": "off"}, (
        "a model name alone keeps the configured backend (the local model has one too)"
    )
    with pytest.raises(ConfigError, match=r"^--llm-base-url 'http://h/v1' .* --llm is 'local'"):
        llm_overrides("local", "http://h/v1")


@pytest.mark.parametrize(
    "command",
    [
        ["simulate", "--users", "1", "--agents", "random"],
        ["bench", "--scenarios", "llm-users-small", "--agents", "random"],
    ],
)
def test_simulate_and_bench_read_the_llm_flags_alike(command: list[str], tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, [*command, "--llm", "local", "--llm-base-url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --llm-base-url"), res.output
    assert not (tmp_path / "o").exists(), "refused before anything was written"


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_reference_log(
        tmp_path_factory.mktemp("ref") / "log", n_users=60, n_items=150, mean_activity=25, seed=2
    )


@pytest.fixture(scope="module")
def real(log: Path) -> RealWorld:
    return prepare_world(
        DataConfig(path=log, split="per_user", test_fraction=0.3, representation={"embedding": "tfidf"})
    )


@pytest.fixture(scope="module")
def saved(real: RealWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A calibrated world's folder as `recoworld calibrate` writes it, its fit taken as given (fitting is
    tested in tests/test_calibration.py): a world config, the log's catalog and users, its split."""
    world = WorldConfig(slate_size=4, catalog={"n_items": len(real.catalog)})
    report = {"data": {"split": "per_user", "test_fraction": 0.3}}
    return save_calibration(
        CalibratedWorld(world, real.catalog, list(real.profiles), report), tmp_path_factory.mktemp("cal")
    )


def test_a_calibrated_world_takes_a_config_on_top_and_overrides_on_both(saved: Path, tmp_path: Path) -> None:
    (tmp_path / "world.yaml").write_text(yaml.safe_dump({"horizon_days": 3.0}))
    fitted = load_calibrated(saved, tmp_path / "world.yaml", n_candidates=20)
    assert fitted.world.slate_size == 4, "the calibrated world's own keys stay"
    assert fitted.world.horizon_days == 3.0 and fitted.world.n_candidates == 20
    assert load_calibrated(saved).world.horizon_days != 3.0


def test_the_log_is_split_as_the_calibration_split_it_on_the_same_items(saved: Path, log: Path, tmp_path: Path) -> None:
    fitted = load_calibrated(saved)
    asked = DataConfig(path=log, split="global", test_fraction=0.1, representation={"embedding": "tfidf"})
    kept = split_as_calibrated(asked, fitted)
    assert (kept.split, kept.test_fraction) == ("per_user", 0.3)
    assert split_as_calibrated(asked, None) is asked
    assert real_world_for(asked, fitted, saved).split.mode == "per_user"

    other = write_reference_log(tmp_path / "other", n_users=60, n_items=120, mean_activity=25, seed=9)
    with pytest.raises(RecoWorldError, match="calibrated on other items than"):
        real_world_for(asked.model_copy(update={"path": other}), fitted, saved)


def test_a_transfer_keeps_only_a_global_cutoff(saved: Path) -> None:
    fitted = load_calibrated(saved)
    with pytest.raises(ConfigError, match="per_user split; transfer needs a global one"):
        global_test_fraction(fitted, saved, 0.2)
    fitted.report["data"] = {"split": "global", "test_fraction": 0.35}
    assert global_test_fraction(fitted, saved, 0.2) == 0.35


def test_simulation_inputs_come_from_the_calibrated_world_then_the_log(saved: Path, real: RealWorld) -> None:
    fitted = load_calibrated(saved)
    catalog, profiles = simulation_inputs(fitted.world, PopulationSpec.default(), real=real, fitted=fitted)
    assert catalog is fitted.catalog and profiles is fitted.profiles
    catalog, profiles = simulation_inputs(fitted.world, PopulationSpec.default(), real=real)
    assert catalog is real.catalog and profiles is real.profiles
    assert simulation_inputs(WorldConfig(), PopulationSpec.default()) == (None, None)
    with pytest.raises(RecoWorldError, match=rf"--candidates 500 .* catalog size {len(real.catalog)}"):
        simulation_inputs(WorldConfig(n_candidates=500), PopulationSpec.default(), real=real)


def test_transfer_worlds_skip_the_circularity_check_without_a_learned_representation(saved: Path, log: Path) -> None:
    data = DataConfig(path=log, split="global", representation={"embedding": "tfidf"})
    real = prepare_world(data)
    messages: list[str] = []
    worlds = transfer_worlds(real, CalibrationConfig(data=data), load_calibrated(saved), True, messages.append)
    assert [w.name for w in worlds] == ["calibrated", "default"]
    assert worlds[1].catalog is real.catalog and worlds[1].world.catalog.n_items == len(real.catalog)
    assert messages == ["circularity check skipped: the tfidf representation is not learned from users"]


def test_a_run_keeps_its_llm_cache_in_its_folder(tmp_path: Path) -> None:
    world = llm_ready(WorldConfig(), tmp_path, calls_model=False)
    assert world.llm.cache_path is not None and Path(world.llm.cache_path).is_relative_to(tmp_path)


def test_fidelity_files_are_the_summary_the_users_and_the_split(real: RealWorld, tmp_path: Path) -> None:
    cfg = FidelityConfig(n_negatives=20, max_users=6)
    population = eval_population(real.catalog, real.profiles, real.split.train, real.split.test, cfg)
    runs, llm = fidelity_runs(real.catalog, WorldConfig(), population, passes=2, llm_users=0)
    assert llm is None and len(runs) == 1 and runs[0][1] == population.users
    summary, per_user = evaluate(runs[0][1], runs[0][0], cfg)
    csv, js, parquet = write_fidelity(tmp_path, summary, per_user, population, real.split, cfg, 2, 0.3)
    pd.testing.assert_frame_equal(pd.read_csv(csv), summary, check_dtype=False)
    meta = json.loads(js.read_text())
    assert meta["passes"] == 2 and meta["split"]["mode"] == "per_user" and meta["users"] == population.counts
    assert len(pd.read_parquet(parquet)) == len(per_user)
