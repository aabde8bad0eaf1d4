"""Transfer: the panel, item attention in time, the ranked world, and the whole check on a log with a known answer.

The end-to-end test runs `recoworld transfer` on a reference log whose generator (not
RecoWorld's user model: Zipf exposure, genre tastes, drift, item releases that rise and fade)
decides the real future; the simulator, calibrated on the past only, must order the panel as
that future does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recoworld.agents.log_rankers import PANEL, TrainLog, make_ranker
from recoworld.cli import app
from recoworld.config import WorldConfig
from recoworld.data import DataConfig, prepare_world
from recoworld.data.attention import fit_half_life, item_attention
from recoworld.data.reference_log import write_reference_log
from recoworld.evaluation.transfer import (
    SimulatedWorld,
    TransferConfig,
    rank_agreement,
    real_scores,
    run_transfer,
    simulated_scores,
)

DAY = 86400.0


def _tiny_log() -> TrainLog:
    """4 users, 6 items: items 0 and 1 always together, item 5 only lately, item 2 long ago and often."""
    rows = [(0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 3), (2, 0, 4), (2, 2, 5), (3, 2, 6), (3, 2, 7),
            (1, 2, 8), (0, 5, 100), (3, 5, 101), (2, 3, 102)]
    users, items, days = (np.array(c) for c in zip(*rows))
    frame = pd.DataFrame({"user_id": users.astype(str), "item_id": items.astype(str), "timestamp": days * DAY})
    genres = [["a"], ["a"], ["b"], ["b", "c"], ["c"], ["a", "c"]]
    return TrainLog.from_frame(frame, pd.Index(list("0123")), pd.Index(list("012345")), genres, 102 * DAY)


def test_panel_rankers_rank_by_what_they_claim() -> None:
    log = _tiny_log()
    users = np.arange(4)
    scores = {}
    for name in PANEL:
        ranker = make_ranker(name, seed=3)
        ranker.fit(log)
        scores[name] = ranker.scores(users)
        assert scores[name].shape == (4, 6), name
        assert np.isfinite(scores[name]).all(), name
    assert np.argmax(scores["popularity"][0]) == 2  # four interactions, the most
    assert np.argmax(scores["recent-popularity"][0]) == 5  # the only item of the last 30 days twice over
    # Item 1 always co-occurs with item 0: a user who had only item 0 gets item 1 first from item-KNN.
    assert scores["item-knn"][2, 1] > scores["item-knn"][2, 4]
    # User 3 (only item 2 and 5) has genres b, a, c; topic-profile puts a "b" item above an "a"-only one.
    assert scores["topic-profile"][3, 3] > scores["topic-profile"][3, 0]
    with pytest.raises(Exception, match="unknown panel recommender 'svd'"):
        make_ranker("svd")


@pytest.mark.parametrize("name", ["als", "bpr", "random", "user-knn"])
def test_panel_rankers_are_seeded(name: str) -> None:
    log = _tiny_log()
    a, b = make_ranker(name, seed=1), make_ranker(name, seed=1)
    a.fit(log)
    b.fit(log)
    np.testing.assert_array_equal(a.scores(np.arange(4)), b.scores(np.arange(4)))


def test_attention_decays_and_its_half_life_is_fitted_in_time() -> None:
    items, times = np.array([0, 0, 1]), np.array([0.0, 10 * DAY, 20 * DAY])
    np.testing.assert_allclose(item_attention(items, times, 3, 20 * DAY, np.inf), [2, 1, 0])
    np.testing.assert_allclose(item_attention(items, times, 3, 20 * DAY, 10.0), [0.25 + 0.5, 1.0, 0.0])
    np.testing.assert_allclose(item_attention(items, times, 3, 5 * DAY, 10.0), [2 ** -0.5, 0, 0])  # no future
    rng = np.random.default_rng(0)
    # A catalog whose hot item changes every 10 days: over the next few days recent attention predicts and
    # all-time counts do not; over the next two months no item stays hot, and the all-time counts win.
    t = np.sort(rng.uniform(0, 200, 20_000))
    hot = (t // 10).astype(int) % 50
    fad = np.where(rng.random(len(t)) < 0.7, hot, rng.integers(0, 50, len(t)))
    assert fit_half_life(fad, t * DAY, 50, horizon_days=5).half_life_days <= 14
    assert fit_half_life(fad, t * DAY, 50, horizon_days=60).half_life_days > 14
    # A stationary catalog: every half-life predicts alike, and the longest memory wins ties of noise.
    steady = rng.zipf(1.5, len(t)) % 50
    assert fit_half_life(steady, t * DAY, 50).half_life_days >= 30


def test_ranked_world_never_reoffers_what_was_consumed_or_just_shown(tmp_path: Path) -> None:
    write_reference_log(tmp_path / "log", n_users=60, n_items=200, mean_activity=30, seed=2)
    real = prepare_world(DataConfig(path=tmp_path / "log", split="global"))
    world = SimulatedWorld("default", WorldConfig(catalog={"n_items": len(real.catalog)}), real.catalog,
                           real.profiles)
    users = [p.user_id for p in real.profiles[:20]]
    order = np.tile(np.arange(len(real.catalog), dtype=np.int32), (len(users), 1))
    sim = simulated_scores(world, users, order, 30.0, 10, seed=0)
    again = simulated_scores(world, users, order, 30.0, 10, seed=0)
    for key in sim:
        np.testing.assert_array_equal(sim[key], again[key])  # the same seed, the same simulated users
    assert sim["consumptions"].sum() > 0
    assert (sim["retention"] > 0).all() and (sim["retention"] <= 1).all()


def test_real_scores_and_rank_agreement() -> None:
    order = np.array([[3, 1, 2, 0], [0, 1, 2, 3]])
    ndcg, recall = real_scores(order, [np.array([3]), np.array([2, 3])], k=2)
    np.testing.assert_allclose(ndcg, [1.0, 0.0])
    np.testing.assert_allclose(recall, [1.0, 0.0])
    rng = np.random.default_rng(0)
    real = rng.random((50, 5)) + np.arange(5)
    same = rank_agreement(real, real * 3 + 1, 100, 0)
    assert same["spearman"] == pytest.approx(1.0) and same["kendall"] == pytest.approx(1.0)
    assert same["spearman_ci"][0] > 0.5
    reverse = rank_agreement(real, -real, 100, 0)
    assert reverse["spearman"] == pytest.approx(-1.0)


def test_transfer_needs_a_global_split(tmp_path: Path) -> None:
    write_reference_log(tmp_path / "log", n_users=40, n_items=150, mean_activity=30, seed=1)
    real = prepare_world(DataConfig(path=tmp_path / "log", split="per_user"))
    world = SimulatedWorld("default", WorldConfig(catalog={"n_items": len(real.catalog)}), real.catalog,
                           real.profiles)
    with pytest.raises(Exception, match="global time split"):
        run_transfer(real.split, real.catalog, [list(g) for g in real.dataset.items["genres"]], [world],
                     TransferConfig())


@pytest.fixture(scope="module")
def trending_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_reference_log(tmp_path_factory.mktemp("trend") / "log", n_users=400, n_items=800,
                               mean_activity=60, trend_strength=1.0)


def test_transfer_recovers_the_known_ranking_of_the_panel(trending_log: Path, tmp_path: Path) -> None:
    """The default panel is the log-trained one: nothing in it shares the simulator's code or item space."""
    out = tmp_path / "transfer"
    result = CliRunner().invoke(app, ["transfer", "--data", str(trending_log), "--out", str(out), "--bootstrap",
                                      "200", "--budget", "30"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "transfer.json").read_text())
    for key in ("spearman", "spearman_ci", "kendall", "kendall_ci", "n_recommenders", "n_users"):
        assert key in doc
    assert doc["n_recommenders"] == len(PANEL) and doc["n_users"] >= 50
    assert doc["world"] == "calibrated"
    assert doc["spearman"] >= 0.8, doc["worlds"]
    table = pd.read_csv(out / "transfer.csv")
    apart = "calibrated, representation apart"
    assert set(table["world"]) == {"calibrated", apart, "default"} and len(table) == 3 * doc["n_recommenders"]
    # The circularity check: a world whose representation one half of the users learned, judged on the other
    # half only, still orders the panel as the future does; the shared world is also scored on those users.
    users = table.set_index("world")["users"]
    assert 0 < users[apart].iloc[0] < users["calibrated"].iloc[0]
    assert doc["worlds"][apart]["spearman"] >= 0.7, doc["worlds"][apart]
    assert f"on the users of {apart}" in doc["worlds"]["calibrated"]
    real = table[table["world"] == "calibrated"].set_index("recommender")["ndcg"]
    assert real.idxmin() == "random" and real.max() > 3 * real["random"]  # the known ranking is not flat
    assert (out / "transfer.png").stat().st_size > 10_000
    assert "Spearman" in result.output
    assert "training item-knn on the past" in result.output  # progress lines, though the output is not a terminal


def test_transfer_bad_input_names_the_flag(trending_log: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["transfer", "--data", str(trending_log), "--out", str(tmp_path / "o"),
                                      "--panel", "random,popularity,svd"])
    assert result.exit_code == 2
    assert "--panel" in result.output and "svd" in result.output
    result = CliRunner().invoke(app, ["transfer", "--data", str(trending_log), "--out", str(tmp_path / "o"),
                                      "--attention", "-3"])
    assert result.exit_code == 2 and "--attention" in result.output


def test_recoworld_recommenders_join_the_panel_through_a_log_observation(tmp_path: Path) -> None:
    write_reference_log(tmp_path / "log", n_users=60, n_items=200, mean_activity=30, seed=4)
    real = prepare_world(DataConfig(path=tmp_path / "log", split="global"))
    users = pd.Index(sorted(real.split.train["user_id"].unique(), key=lambda s: (len(s), s)))
    log = TrainLog.from_frame(real.split.train, users, pd.Index(real.catalog.item_ids),
                              [list(g) for g in real.dataset.items["genres"]], float(real.split.cutoff or 0))
    greedy = make_ranker("greedy", seed=0, catalog=real.catalog)
    greedy.fit(log)
    scores = greedy.scores(np.arange(5))
    emb = real.catalog.embeddings.astype(np.float64)
    for u in range(5):
        history = greedy.histories[u]  # type: ignore[attr-defined]
        top = np.argsort(-scores[u])[:10]
        assert not np.isin(top, history).any()  # it ranks unseen items only
        taste = emb[history[-20:]].mean(axis=0)
        unseen = np.setdiff1d(np.arange(len(emb)), history)
        # Greedy's top items are closer to the user's recent taste than the unseen items on average.
        assert (emb[top] @ taste).mean() > (emb[unseen] @ taste).mean()
    with pytest.raises(Exception, match="nope"):
        make_ranker("nope", catalog=real.catalog)


def _clustered_log(path: Path, drifting: bool, seed: int = 0) -> Path:
    """160 users over 200 days on four item clusters of 25. A drifting user takes one cluster, then another
    from day 100 on; a steady user takes two clusters at a fixed mix the whole time."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(160):
        first, second = rng.choice(4, 2, replace=False)
        mix = rng.uniform(0.3, 0.7)
        for day in np.sort(rng.uniform(0, 200, 40)):
            later = (day >= 100) if drifting else rng.random() < mix
            rows.append((u, int(rng.integers(0, 25)) + 25 * int(second if later else first), day * DAY))
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(path / "interactions.csv", index=False)
    pd.DataFrame({"item_id": range(100), "genres": [g for g in "ABCD" for _ in range(25)]}).to_csv(
        path / "items.csv", index=False)
    return path


@pytest.mark.parametrize("drifting", [True, False])
def test_interest_drift_is_fitted_in_time_and_only_where_the_log_shows_it(tmp_path: Path, drifting: bool) -> None:
    from recoworld.data.users import fit_interest_half_life

    real = prepare_world(DataConfig(path=_clustered_log(tmp_path / "log", drifting), split="global"))
    train = real.split.train
    log = train.assign(item=pd.Index(real.catalog.item_ids).get_indexer(train["item_id"]))
    fit = fit_interest_half_life(log, real.catalog, horizon_days=30)
    assert fit.users > 50
    if drifting:  # recent interactions rank what comes next: a short memory wins clearly
        assert fit.half_life_days <= 30 and fit.auc[fit.half_life_days] > fit.auc[np.inf] + 0.05
    else:  # nothing moves: no decay is assumed
        assert fit.half_life_days >= 120
    over_30_days = {"interest_half_life_days": "fit", "popularity_horizon_days": 30}
    drifted = prepare_world(DataConfig(path=tmp_path / "log", split="global", representation=over_30_days))
    assert any(a.interest_embedding != b.interest_embedding for a, b in zip(real.profiles, drifted.profiles)) \
        == drifting


@pytest.fixture(scope="module")
def recency_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Strong trends on a thin back catalog: the recently popular items predict the future best, as on MovieLens."""
    return write_reference_log(tmp_path_factory.mktemp("recency") / "log", n_users=400, n_items=800,
                               mean_activity=60, trend_strength=2.0, lifecycle_days=60.0, back_catalog=0.1)


def test_attention_fit_ranks_recent_popularity_as_the_real_future_does(recency_log: Path, tmp_path: Path) -> None:
    out = tmp_path / "transfer"
    result = CliRunner().invoke(app, ["transfer", "--data", str(recency_log), "--out", str(out), "--bootstrap",
                                      "50", "--budget", "20", "--attention", "fit", "--no-circularity",
                                      "--panel", "random,popularity,recent-popularity,item-knn,als"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "transfer.csv")
    cal = table[table["world"] == "calibrated"].set_index("recommender")
    assert cal.at["recent-popularity", "ndcg"] > 1.2 * cal.at["popularity", "ndcg"]  # the log is recency-dominated
    # With the half-life fitted by the choice model, simulated users follow the items that are hot at the cutoff.
    assert cal.at["recent-popularity", "consumptions"] > cal.at["popularity", "consumptions"]


def test_transfer_reuses_a_calibration_only_on_its_own_global_cutoff(tmp_path: Path) -> None:
    data = write_reference_log(tmp_path / "log", n_users=120, n_items=300, mean_activity=40, seed=3)
    runner = CliRunner()
    for split, fraction in (("per_user", "0.2"), ("global", "0.3")):
        res = runner.invoke(app, ["calibrate", "--data", str(data), "--out", str(tmp_path / split), "--split", split,
                                  "--test-fraction", fraction, "--budget", "8"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["transfer", "--data", str(data), "--calibrated", str(tmp_path / "per_user"),
                              "--out", str(tmp_path / "t1")])
    assert res.exit_code == 2 and "per_user split" in res.output
    res = runner.invoke(app, ["transfer", "--data", str(data), "--calibrated", str(tmp_path / "global"), "--out",
                              str(tmp_path / "t2"), "--no-circularity", "--bootstrap", "20", "--panel",
                              "random,popularity,item-knn"])
    assert res.exit_code == 0, res.output
    cutoff = json.loads((tmp_path / "t2" / "transfer.json").read_text())["cutoff"]
    times = pd.read_csv(data / "u.data", sep="\t", header=None)[3]
    assert cutoff == pytest.approx(np.quantile(times, 0.7))  # the calibration's 30% held out, not the default 20%


def test_plugins_in_the_panel_are_labelled_by_their_name(trending_log: Path, tmp_path: Path) -> None:
    """A `file.py:Class` panel member is a row named by its class's `name`, as in every other run's tables; one
    named like a log-trained ranker is refused before any work, naming both."""
    (tmp_path / "agents.py").write_text(
        "from recoworld.agents import Recommender\n\n"
        "class Fresh(Recommender):\n    name = 'fresh'\n\n"
        "    def act(self, observation, info):\n"
        "        return self.top_k(-observation['candidate_features'][:, -1], observation)\n\n"
        "class Popular(Fresh):\n    name = 'Popularity'\n")
    out = tmp_path / "t"
    result = CliRunner().invoke(app, ["transfer", "--data", str(trending_log), "--out", str(out), "--bootstrap", "20",
                                      "--budget", "10", "--no-circularity", "--users", "60",
                                      "--panel", f"random,popularity,{tmp_path / 'agents.py'}:Fresh"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "transfer.csv")
    assert set(table["recommender"]) == {"random", "popularity", "fresh"}
    result = CliRunner().invoke(app, ["transfer", "--data", str(trending_log), "--out", str(tmp_path / "o"),
                                      "--panel", f"random,item-knn,{tmp_path / 'agents.py'}:Popular"])
    assert result.exit_code == 2 and "--panel" in result.output
    assert "'Popularity'" in result.output and "log-trained panel ranker" in result.output
