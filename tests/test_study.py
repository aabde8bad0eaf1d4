"""Population studies on Ray: checkpoint, interrupt, resume, determinism, creator effects, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recoworld.errors import ConfigError
from recoworld.studies.spec import StudySpec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TINY = {
    "name": "tiny",
    "seed": 11,
    "n_users": 14,
    "shard_size": 4,  # 4 shards: 4 + 4 + 4 + 2 users
    "recommenders": ["greedy"],
    "world": {"slate_size": 3, "n_candidates": 12, "horizon_days": 4, "catalog": {"n_items": 300, "seed": 4}},
    "new_item_share": 0.05,
    "creator": {
        "name": "Tiny Studio",
        "target_segment": "explorer",
        "items": {"count": 15, "popularity": 5.0, "release_day": {"dist": "uniform", "low": 0, "high": 2}},
    },
}


class Crash(RuntimeError):
    """Stands in for the driver dying mid-study."""


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


@pytest.mark.slow
def test_interrupted_study_resumes_to_the_uninterrupted_result(ray_session, tmp_path: Path) -> None:
    from recoworld.studies.runner import MANIFEST, run_study

    spec = StudySpec.parse(TINY)
    full = run_study(spec, tmp_path / "full")
    assert full.shards_run == 4

    calls = []

    def crash_after_two(done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            raise Crash("driver died")

    with pytest.raises(Crash):
        run_study(spec, tmp_path / "resumed", on_shard=crash_after_two)
    manifest = json.loads((tmp_path / "resumed" / MANIFEST).read_text())
    assert len(manifest["shards"]) == 2
    assert not (tmp_path / "resumed" / "episodes.parquet").exists()  # no final result from a partial run

    resumed = run_study(spec, tmp_path / "resumed")
    assert resumed.shards_run == 2  # only the shards the crash lost

    eps_keys = ["recommender", "arm", "user_id"]
    pd.testing.assert_frame_equal(_sorted(full.episodes, eps_keys), _sorted(resumed.episodes, eps_keys))
    traj_keys = ["recommender", "arm", "user_id", "step", "position"]
    pd.testing.assert_frame_equal(_sorted(full.trajectories, traj_keys), _sorted(resumed.trajectories, traj_keys))
    on_disk = pd.read_parquet(tmp_path / "resumed" / "episodes.parquet")
    pd.testing.assert_frame_equal(_sorted(on_disk, eps_keys), _sorted(full.episodes, eps_keys))

    # Nobody lost, nobody twice: one episode per user, recommender and arm.
    users = {u for i in range(full.setup.n_shards) for u in full.setup.users.shard(i).user_ids()}
    assert len(users) == 14
    for _, group in resumed.episodes.groupby(["recommender", "arm"]):
        assert sorted(group["user_id"]) == sorted(users)

    # A rerun of a finished study computes nothing and returns the same results.
    again = run_study(spec, tmp_path / "resumed")
    assert again.shards_run == 0
    pd.testing.assert_frame_equal(again.episodes, resumed.episodes)


@pytest.mark.slow
def test_creator_content_reaches_users_only_in_the_with_arm(ray_session, tmp_path: Path) -> None:
    from recoworld.studies.report import creator_effects, segment_summary, write_report
    from recoworld.studies.runner import run_study

    result = run_study(StudySpec.parse({**TINY, "n_users": 8}), tmp_path)
    traj, eps = result.trajectories, result.episodes
    new = set(result.setup.new_items.tolist())
    assert len(new) == 15
    assert not traj[traj["arm"] == "without"]["item"].isin(new).any()
    assert traj[traj["arm"] == "with"]["item"].isin(new).any()
    assert (traj["new_item"] == traj["item"].isin(new)).all()

    summary = segment_summary(traj, eps, target="explorer")
    assert (summary[summary["arm"] == "without"]["reach"] == 0).all()
    assert summary[(summary["arm"] == "with") & (summary["segment"] == "all")]["reach"].iloc[0] > 0
    assert summary[summary["target"]]["segment"].unique().tolist() == ["explorer"]
    effects = creator_effects(summary)
    assert set(effects["segment"]) == set(summary["segment"])

    report, _ = write_report(traj, eps, tmp_path, title="t", horizon_days=4, target="explorer")
    text = report.read_text()
    assert "## Per segment" in text and "Effect of the new content" in text
    for name in ("summary.csv", "effects.csv", "retention.png", "segments.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
def test_a_checkpoint_of_another_study_is_refused(ray_session, tmp_path: Path) -> None:
    from recoworld.studies.runner import run_study

    run_study(StudySpec.parse({**TINY, "n_users": 4}), tmp_path)
    with pytest.raises(ConfigError, match="different study"):
        run_study(StudySpec.parse({**TINY, "n_users": 4, "seed": 12}), tmp_path)


def test_shard_seeds_depend_only_on_study_seed_and_index() -> None:
    from recoworld.studies.runner import prepare, shard_seeds

    assert shard_seeds(11, 2) == shard_seeds(11, 2)
    assert len({shard_seeds(11, i) for i in range(50)}) == 50
    assert shard_seeds(11, 0) != shard_seeds(12, 0)
    spec = StudySpec.parse(TINY)
    a, b = prepare(spec), prepare(spec)
    assert a.users.shard(0).profiles(a.base) == b.users.shard(0).profiles(b.base)
    np.testing.assert_array_equal(a.release_day["with"], b.release_day["with"])
    assert a.fingerprint() == b.fingerprint()
    assert np.isinf(a.release_day["without"][a.new_items]).all()
    # Shards mix segments instead of cutting the population segment by segment.
    assert len({p.segment for p in a.users.shard(0).profiles(a.base)}) > 1


def test_explicit_profiles_replace_the_population() -> None:
    """The hook for populations built from data: a list of UserProfile objects."""
    from recoworld.catalog import cached_catalog
    from recoworld.config import CatalogConfig
    from recoworld.population import PopulationSpec, sample_population
    from recoworld.studies.runner import prepare

    cat = cached_catalog(CatalogConfig(n_items=300, seed=4))
    users = sample_population(PopulationSpec.default(), cat, np.random.default_rng(5), n=6)
    spec = StudySpec.parse({**TINY, "profiles": [u.model_dump() for u in users]})
    assert sorted(p.user_id for p in prepare(spec).users.given) == sorted(u.user_id for u in users)


def test_spec_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown agent"):
        StudySpec.parse({**TINY, "recommenders": ["gredy"]})
    with pytest.raises(ConfigError, match="target_segment 'nobody'"):
        StudySpec.parse({**TINY, "creator": {"name": "x", "target_segment": "nobody"}})
    with pytest.raises(ConfigError, match="shard_size"):
        StudySpec.parse({**TINY, "shard_size": 0})
    with pytest.raises(ConfigError, match="unknown_key"):
        StudySpec.parse({**TINY, "unknown_key": 1})
    with pytest.raises(ConfigError, match=r"creator\.items\.topic"):
        from recoworld.studies.runner import prepare

        prepare(
            StudySpec.parse(
                {**TINY, "creator": {"name": "x", "target_segment": "explorer", "items": {"topic": "knitting"}}}
            )
        )
    with pytest.raises(ConfigError, match="not found"):
        StudySpec.from_yaml(tmp_path / "missing.yaml")


def test_example_specs_validate() -> None:
    spec = StudySpec.from_yaml(EXAMPLES / "creator_study.yaml")
    assert spec.creator is not None
    assert spec.creator.target_segment in spec.segment_names()
    assert spec.population.name == "podcast-app"  # loaded from examples/population.yaml


@pytest.mark.slow
def test_cli_runs_the_example_study_and_writes_the_report(ray_session, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recoworld.cli import app

    result = CliRunner().invoke(app, ["study", str(EXAMPLES / "creator_study.yaml"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"outputs: {tmp_path} (trajectories.parquet, episodes.parquet, report.md, report.html)" in result.output
    assert "catalog.parquet" in os.listdir(tmp_path), "the HTML report's titles come from the study's catalog"
    report = (tmp_path / "report.md").read_text()
    assert "Deep Time Audio" in report and "curious" in report
    eps = pd.read_parquet(tmp_path / "episodes.parquet")
    assert len(eps) == 48 * 2 * 2  # users x recommenders x arms
    for name in ("trajectories.parquet", "summary.csv", "effects.csv", "retention.png", "segments.png"):
        assert (tmp_path / name).exists()

    bad = CliRunner().invoke(app, ["study", str(tmp_path / "nope.yaml")])
    assert bad.exit_code == 2
    assert "not found" in bad.output


def test_the_manifest_is_written_after_every_shard_until_1_percent_are_waiting() -> None:
    """Each write holds every recorded shard: rewriting it after each of 31,250 shards took the driver about
    7 hours (experiments/bench_study.py); a study stopping by any error writes it anyway (above)."""
    from recoworld.studies.runner import manifest_due

    assert manifest_due(1, 0) and manifest_due(1, 99)  # small studies: after every shard
    assert not manifest_due(1, 100) and manifest_due(2, 100)
    assert not manifest_due(100, 10_000) and manifest_due(101, 10_000)
