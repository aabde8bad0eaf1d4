"""The validity report: facts on hand-made logs with known answers, and `recoworld validate` end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fault_server import FaultServer
from typer.testing import CliRunner

from recoworld.catalog import Catalog
from recoworld.cli import app
from recoworld.config import WorldConfig
from recoworld.data import DataConfig, load_dataset, prepare_world, temporal_split
from recoworld.data.reference_log import write_reference_log
from recoworld.validity import (
    HEADLINE,
    IN_SAMPLE,
    NOT_IN_LOG,
    OUT_OF_SAMPLE,
    SESSION_GAP_MINUTES,
    ConsumptionLog,
    SimWorld,
    ValidityConfig,
    from_interactions,
    from_trajectories,
    headline,
    validate,
)
from recoworld.validity.facts import (
    activity,
    distinctness,
    gini,
    interest_drift,
    ks_distance,
    lorenz,
    popularity,
    positive_rate,
    return_curve,
    session_gap,
    session_length,
    top_share,
    wasserstein_distance,
)

DAY = 86400


def real_log(catalog: Catalog, rows: list[tuple[str, int, float]], rating: list[float] | None = None,
             scale: tuple[float, float] | None = None, horizon: float = 1000.0) -> ConsumptionLog:
    """A log from (user, catalog row, time in seconds) triples."""
    users, items, times = zip(*rows)
    inter = pd.DataFrame({"user_id": users, "item_id": catalog.item_ids[list(items)],
                          "rating": rating if rating is not None else np.nan, "timestamp": times})
    return from_interactions(inter, catalog, scale, horizon)


@pytest.fixture(scope="module")
def ref_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_reference_log(tmp_path_factory.mktemp("ref"), n_users=120, n_items=300, mean_activity=40, seed=3)


# ---------------------------------------------------------------------- facts with known answers


def test_gini_top_share_and_lorenz() -> None:
    assert gini(np.full(50, 7)) == pytest.approx(0.0)
    one = np.zeros(50)
    one[3] = 9
    assert gini(one) == pytest.approx(49 / 50)
    assert top_share(one, 0.01) == 1.0 and top_share(np.full(200, 1.0), 0.1) == pytest.approx(0.1)
    x, y = lorenz(np.array([1.0, 3.0]))
    np.testing.assert_allclose(x, [0, 0.5, 1])
    np.testing.assert_allclose(y, [0, 0.25, 1])


def test_popularity_counts_unconsumed_catalog_items(catalog: Catalog) -> None:
    uniform = real_log(catalog, [("u", i, i) for i in range(len(catalog))])
    assert popularity(uniform, catalog).stats["Gini"] == pytest.approx(0.0)
    single = real_log(catalog, [(f"u{i}", 5, i) for i in range(30)])
    fact = popularity(single, catalog)
    assert fact.stats["Gini"] == pytest.approx(1 - 1 / len(catalog)) and fact.stats["top 1% share"] == 1.0


def test_sessions_are_cut_after_the_inactivity_threshold(catalog: Catalog) -> None:
    gap = SESSION_GAP_MINUTES * 60
    log = real_log(catalog, [("a", 0, 0), ("a", 1, gap), ("a", 2, 2 * gap + 1), ("a", 3, 2 * gap + 2),
                             ("b", 4, 10 * DAY), ("b", 5, 12 * DAY)])
    s = log.sessions()
    assert s["session"].tolist() == [0, 0, 1, 1, 0, 1]  # exactly the threshold stays in the session
    assert s["time"].tolist()[4] == 0.0  # times count from each user's first event
    assert session_length(log, catalog).sample.tolist() == [2, 2, 1, 1]
    np.testing.assert_allclose(session_gap(log, catalog).sample, [(gap + 1) / DAY, 2.0])


def test_activity_counts_users_observed_for_the_whole_horizon(catalog: Catalog) -> None:
    # The log ends on day 20; "late" joins on day 15, so the 10-day horizon sees only 5 of its days.
    log = real_log(catalog, [("a", 0, 0), ("a", 1, DAY), ("a", 2, 9 * DAY), ("a", 3, 12 * DAY), ("c", 4, 0),
                             ("late", 5, 15 * DAY), ("end", 6, 20 * DAY - 5)], horizon=10.0)
    assert activity(log, catalog).sample.tolist() == [3, 1]  # a's day-12 rating is past its horizon


def test_return_curve_counts_only_observed_days(catalog: Catalog) -> None:
    # a: active on days 0, 1, 3; b: days 0, 2; c starts on day 8, returns on day 9, and the log ends there.
    log = real_log(catalog, [("a", 0, 0), ("a", 1, 1 * DAY + 5), ("a", 2, 3 * DAY + 5), ("b", 3, 0),
                             ("b", 4, 2 * DAY + 5), ("c", 5, 8 * DAY), ("c", 6, 9 * DAY + 5)])
    fact = return_curve(log, catalog)
    days, share = fact.curve
    assert days.tolist() == list(range(1, 10))  # a is observed for 9 days and 5 seconds
    # Day 1: a and c of a, b, c; day 2 on, c is no longer observed: b, then a, then nobody, of a and b.
    np.testing.assert_allclose(share[:4], [2 / 3, 1 / 2, 1 / 2, 0.0])
    assert fact.stats == {"day 1": pytest.approx(2 / 3), "day 7": 0.0}


def test_interest_drift_is_topic_jaccard_of_consecutive_sessions(catalog: Catalog) -> None:
    by_topic = {t: np.flatnonzero(catalog.topic == t) for t in range(3)}
    t0, t1, t2 = (by_topic[t] for t in range(3))
    rows = [("a", t0[0], 0), ("a", t1[0], 60),  # session {0, 1}
            ("a", t1[1], DAY), ("a", t2[0], DAY + 60),  # {1, 2}: Jaccard 1/3
            ("a", t2[1], 2 * DAY),  # {2}: Jaccard 1/2
            ("b", t0[1], 0), ("b", t0[2], DAY)]  # {0} then {0}: 1
    fact = interest_drift(real_log(catalog, rows), catalog)
    assert sorted(fact.sample.tolist()) == pytest.approx([1 / 3, 1 / 2, 1.0])


def test_distinctness_matches_brute_force_and_separates_clustered_users(catalog: Catalog) -> None:
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", int(i), 60 * k) for u in range(4) for k, i in enumerate(rng.choice(len(catalog), 6))]
    log = real_log(catalog, rows)
    emb = catalog.embeddings.astype(np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    eaten = log.consumptions
    e, u = emb[eaten["item"].to_numpy()], eaten["user"].to_numpy()
    dist = 1 - e @ e.T
    same, off = u[:, None] == u[None, :], ~np.eye(len(u), dtype=bool)
    inter = dist[~same].mean()
    intra = [dist[(u[:, None] == x) & (u[None, :] == x) & off].mean() for x in np.unique(u)]
    np.testing.assert_allclose(np.sort(distinctness(log, catalog).sample), np.sort(np.array(intra) / inter))

    clustered = [(f"t{t}", int(i), 60 * k)
                 for t in range(4) for k, i in enumerate(np.flatnonzero(catalog.topic == t)[:6])]
    assert distinctness(real_log(catalog, clustered), catalog).stats["mean"] < 0.8


def test_distances() -> None:
    a = np.arange(100.0)
    assert ks_distance(a, a) == 0.0 and ks_distance(a, a + 1000) == 1.0
    assert wasserstein_distance(a, a + 2.5) == pytest.approx(2.5)
    assert wasserstein_distance(np.array([0.0]), np.array([0.0, 1.0])) == pytest.approx(0.5)


def test_missing_signals_say_so(catalog: Catalog) -> None:
    rows = [("a", 0, 0), ("a", 1, 60), ("b", 2, 0)]
    rated = positive_rate(real_log(catalog, rows, rating=[5, 2, 4], scale=(1, 5)), catalog)
    assert rated.stats == {"of consumptions": pytest.approx(2 / 3)}
    assert rated.missing["per impression"].startswith(NOT_IN_LOG)
    implicit = positive_rate(real_log(catalog, rows), catalog)
    assert not implicit.stats and set(implicit.missing) == {"per impression", "of consumptions"}
    # 0/1 "ratings" are impressions with a click flag.
    clicks = real_log(catalog, rows, rating=[1, 0, 1], scale=(0, 1))
    assert positive_rate(clicks, catalog).stats == {"per impression": pytest.approx(2 / 3)}
    assert len(clicks.consumptions) == 2


def test_a_period_seen_from_a_common_origin(catalog: Catalog) -> None:
    # The period starts on day 10 and the log ends on day 40; the horizon is 5 days. a comes back on days 11
    # and 12 (and 16, past the horizon); b's day-5 rating is before the period; c never comes back.
    inter = pd.DataFrame({"user_id": ["a", "a", "a", "b"], "item_id": catalog.item_ids[[1, 2, 3, 4]], "rating": np.nan,
                          "timestamp": np.array([11, 12, 16, 5]) * DAY})
    log = from_interactions(inter, catalog, None, 5.0, start=10 * DAY, users=["a", "b", "c"], observed_until=40 * DAY)
    assert log.events["user"].tolist() == ["a", "a"] and log.events["time"].tolist() == [1.0, 2.0]  # from day 10
    assert log.window.to_dict() == {"a": 5.0, "b": 5.0, "c": 5.0}  # everyone observed the whole period
    assert activity(log, catalog).sample.tolist() == [2, 0, 0]


def test_trajectory_rows_become_timed_consumptions(catalog: Catalog) -> None:
    # One turn of three slots ending at 1.5 days; the user left before the third slot.
    traj = pd.DataFrame({"user_id": "u", "step": 1, "item": [7, 8, 9], "reaction": [2, 0, -1],
                         "dwell_min": [10.0, 2.0, 0.0], "time_days": 1.5})
    log = from_trajectories(traj, catalog, catalog, horizon_days=5.0, name="sim")
    ev = log.events
    assert ev["item"].tolist() == [7, 8] and ev["consumed"].tolist() == [True, False]
    assert ev["positive"].tolist() == [1.0, 0.0] and log.impressions and log.ratings
    np.testing.assert_allclose(ev["time"], [0.0, 2 / 1440])  # the skip came 2 minutes after the like ended
    assert log.window["u"] == pytest.approx(5.0 - (1.5 - 2 / 1440))
    with pytest.raises(ValueError, match="time_days"):
        from_trajectories(traj.drop(columns="time_days"), catalog, catalog, 5.0, "sim")
    with pytest.raises(ValueError, match="one recommender's rows at a time"):
        from_trajectories(traj.assign(recommender=["a", "b", "a"]), catalog, catalog, 5.0, "sim")


# ---------------------------------------------------------------------- the command


def test_validate_command_on_a_reference_log(ref_dir: Path, tmp_path: Path) -> None:
    # 100 of the log's 117 users with train history: about a quarter of them are active after the cutoff.
    args = ["validate", "--data", str(ref_dir), "--embedding", "tfidf", "--users", "100", "--fidelity-users", "20",
            "--days", "20"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "Validity" in res.output and "not in this log" in res.output
    # The header names both periods and who is compared in each.
    text = " ".join(res.output.split())  # the header wraps
    assert "out-of-sample (test period after the cutoff, never fitted; 20 days): real " in text
    assert "in-sample (train period, which calibration fitted; 20 days): real 100 of 100 users" in text
    rows = pd.read_csv(tmp_path / "a" / "validity.csv")
    assert list(rows.columns) == ["period", "fact", "statistic", "real", "world", "value", "distance", "note"]
    assert set(rows["world"]) == {"default"} and list(dict.fromkeys(rows["period"])) == [OUT_OF_SAMPLE, IN_SAMPLE]
    out, ins = rows[rows["period"] == OUT_OF_SAMPLE], rows[rows["period"] == IN_SAMPLE]
    ranking = out[out["fact"] == "ranking"].set_index("statistic")["value"]
    assert ranking["users"] == 20 and 0 < ranking["AUC (simulated)"] < 1 and 0 < ranking["AUC (choice model)"] < 1
    split = temporal_split(load_dataset(ref_dir).interactions)
    cold = set(split.test["user_id"]) - set(split.train["user_id"])
    assert ranking["cold-start users"] == len(cold) > 0 and 0 < ranking["AUC cold-start (choice model)"] < 1
    assert np.isnan(out.set_index("statistic").loc["AUC cold-start (choice model)", "distance"])  # not a headline
    facts = {"positive rate", "popularity", "activity", "session length", "session gap", "return curve",
             "interest drift", "distinctness", "users"}
    assert set(out["fact"]) == facts | {"ranking"} and set(ins["fact"]) == facts  # held-out ranking is out of sample
    users = rows[rows["fact"] == "users"].set_index(["period", "statistic"])
    assert (users.loc[(slice(None), "compared"), ["real", "value"]] == 100).all().all()
    assert users.loc[(IN_SAMPLE, "with consumptions in the period"), "real"] == 100
    assert 0 < users.loc[(OUT_OF_SAMPLE, "with consumptions in the period"), "real"] < 100  # many never come back
    per_impression = rows[rows["statistic"] == "per impression"].iloc[0]
    assert np.isnan(per_impression["real"]) and per_impression["note"].startswith(NOT_IN_LOG)
    assert 0 <= per_impression["value"] <= 1
    ks = rows[rows["statistic"] == "KS"]
    assert len(ks) == 10 and ks["distance"].between(0, 1).all() and set(ks["period"]) == {OUT_OF_SAMPLE, IN_SAMPLE}
    assert (tmp_path / "a" / "validity.png").stat().st_size > 10_000
    assert (tmp_path / "a" / "validity_in_sample.png").stat().st_size > 10_000
    again = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert again.exit_code == 0
    pd.testing.assert_frame_equal(rows, pd.read_csv(tmp_path / "b" / "validity.csv"))  # seeded
    leaky = CliRunner().invoke(app, [*args, "--split", "per_user", "--out", str(tmp_path / "c")])
    assert leaky.exit_code == 0, leaky.output
    text = " ".join(leaky.output.split())
    assert "LEAKS the future" in text and "per_user split: the out-of-sample column" in text


def test_each_period_compares_its_own_interactions(ref_dir: Path) -> None:
    """The log side of the out-of-sample column is exactly the compared users' interactions after the cutoff,
    seen from the cutoff; the in-sample column's is their train interactions, each user from their first."""
    real = prepare_world(DataConfig(path=ref_dir, representation={"embedding": "tfidf"}))
    worlds = [SimWorld("default", WorldConfig(), real.catalog, real.profiles)]
    result = validate(real, worlds, ValidityConfig(users=40, fidelity_users=10, passes=5, days=20))
    chosen, cutoff, day = set(result.users), real.split.cutoff, DAY
    assert len(chosen) == 40 and chosen <= {p.user_id for p in real.profiles}
    test, train = real.split.test, real.split.train
    after = test[test["user_id"].isin(chosen) & ((test["timestamp"] - cutoff) < 20 * day)]
    out = result.periods[OUT_OF_SAMPLE]
    assert out.horizon_days == 20 and out.compared == 40 and out.real_users == after["user_id"].nunique()
    real_out = result.facts[OUT_OF_SAMPLE]["real"]
    # Every compared user is observed for the whole period: one who never came back counts 0.
    expected = after.groupby("user_id").size().reindex(sorted(chosen), fill_value=0).to_numpy()
    np.testing.assert_array_equal(np.sort(real_out["activity"].sample), np.sort(expected))
    items = after["item_id"].map(pd.Series(np.arange(len(real.catalog)), index=real.catalog.item_ids))
    assert real_out["popularity"].stats["Gini"] == pytest.approx(gini(np.bincount(items, minlength=len(real.catalog))))
    before = train[train["user_id"].isin(chosen)]
    first = before.groupby("user_id")["timestamp"].transform("min")
    kept = before[(before["timestamp"] - first) < 20 * day]
    items = kept["item_id"].map(pd.Series(np.arange(len(real.catalog)), index=real.catalog.item_ids))
    real_in = result.facts[IN_SAMPLE]["real"]
    assert real_in["popularity"].stats["Gini"] == pytest.approx(gini(np.bincount(items, minlength=len(real.catalog))))
    assert result.periods[IN_SAMPLE].real_users == 40
    # The simulated side: the same users, counted per period.
    for period in (OUT_OF_SAMPLE, IN_SAMPLE):
        p = result.periods[period]
        n_sim = p.simulated_users["default"]
        assert 0 < n_sim <= 40
        rows = result.rows
        row = rows[(rows["period"] == period) & (rows["statistic"] == "with consumptions in the period")]
        assert row["real"].item() == p.real_users and row["value"].item() == n_sim
    # The headline is out of sample, and the columns differ where the periods do.
    head = headline(result.rows)
    pd.testing.assert_frame_equal(head, headline(result.rows, OUT_OF_SAMPLE))
    assert "ranking" in set(head["fact"]) and "ranking" not in set(headline(result.rows, IN_SAMPLE)["fact"])
    assert real_out["popularity"].stats["Gini"] != real_in["popularity"].stats["Gini"]


def test_continuation_brings_the_active_share_after_the_cutoff_toward_the_log(ref_dir: Path) -> None:
    """Most real users are away at the cutoff (churned or in a long gap), so few consume after it. Users
    simulated from their state at the cutoff (`continuation`, the default) come back as rarely as that;
    users all opened on day 0 (`continuation=False`) are mostly active, two to three times the log's count."""
    real = prepare_world(DataConfig(path=ref_dir, representation={"embedding": "tfidf"}))
    worlds = [SimWorld("default", WorldConfig(), real.catalog, real.profiles)]
    cfg = ValidityConfig(users=100, fidelity_users=10, passes=5, days=20)
    cont = validate(real, worlds, cfg)
    fresh = validate(real, worlds, cfg.model_copy(update={"continuation": False}))
    period = cont.periods[OUT_OF_SAMPLE]
    logged, continued = period.real_users, period.simulated_users["default"]
    started = fresh.periods[OUT_OF_SAMPLE].simulated_users["default"]
    assert logged == fresh.periods[OUT_OF_SAMPLE].real_users and 0 < logged < 50
    assert started > 2 * logged  # the old protocol: everyone is on the platform on day 0
    assert 0 < continued < 2 * logged and abs(continued - logged) < abs(started - logged) / 3
    # Users who never come back are compared with zero activity on both sides, all seen from the cutoff.
    activity = cont.facts[OUT_OF_SAMPLE]["default"]["activity"].sample
    assert len(activity) == len(cont.facts[OUT_OF_SAMPLE]["real"]["activity"].sample) == 100
    assert (activity == 0).sum() == 100 - continued
    assert any("from the cutoff" in note and "had churned" in note for note in cont.notes)
    # The in-sample column is the same simulation from day 0 either way.
    pd.testing.assert_frame_equal(cont.rows[cont.rows["period"] == IN_SAMPLE].reset_index(drop=True),
                                  fresh.rows[fresh.rows["period"] == IN_SAMPLE].reset_index(drop=True))


def test_calibrated_world_joins_the_report(ref_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["calibrate", "--data", str(ref_dir), "--out", str(tmp_path / "cal"), "--budget", "5"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["validate", "--data", str(ref_dir), "--calibrated", str(tmp_path / "cal"), "--users",
                              "30", "--fidelity-users", "10", "--days", "15", "--out", str(tmp_path / "v")])
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(tmp_path / "v" / "validity.csv")
    default, calibrated = (rows[rows["world"] == w].drop(columns=["world", "value", "distance"]).reset_index(drop=True)
                           for w in ("default", "calibrated"))
    pd.testing.assert_frame_equal(default, calibrated)  # the same facts against the same real numbers
    text = " ".join(res.output.split())
    assert text.count("simulated: default ") == 2 and ", calibrated " in text  # both worlds' counts, per period
    assert set(rows["period"]) == {OUT_OF_SAMPLE, IN_SAMPLE}
    res = runner.invoke(app, ["validate", "--data", str(ref_dir), "--calibrated", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "is not a calibrated world" in res.output


#: Facts on whose headline distance calibration brings the world closer to the reference log than the
#: default world, in sample (see the test's docstring for the others).
CALIBRATION_CLOSER = ("positive rate", "session length", "session gap", "return curve")


def test_calibrated_world_is_closer_to_the_log_than_the_default_world(tmp_path: Path) -> None:
    """Issue 12's done-criterion on the independent reference log (300 users: 120 are too few to rank
    two worlds on a fact): the calibrated world is closer than the default world on the headline
    distance (`HEADLINE`) of the facts in `CALIBRATION_CLOSER`, in sample: on the train period,
    which is what calibration fits (the held-out ranking has no in-sample column).

    Out of sample (issue 27) it is not. Most compared users never come back after the cutoff (33 of
    200 on the MovieLens-100K-sized reference log). With every simulated user opening a session on
    day 0 (`continuation=False`), 193 (default) and 200 (calibrated) of them consume, and activity,
    session gaps and the long tail measured where users stand at the cutoff more than the fit. Users
    continued from their state at the cutoff (the default) consume as rarely as the log's (34 and
    19): activity KS falls from 0.80 / 0.84 to 0.05 / 0.09 and the calibrated session gap from 0.25
    to 0.07, yet the calibrated world is still closer on only 4 of 9 facts (ranking, positive rate,
    popularity, session gap). Its per-visit return model reads a long absence as churn more often
    than the default does, so too few of its users come back. The test pins only that every fact is
    judged out of sample; a fit that transfers is later work.

    Not on activity and interest drift since near-duplicates start at a cosine of 0.9 (commit a22e267; 0.8
    before): on this log activity KS is 0.38 calibrated against 0.29 default, interest drift 0.12 against 0.10
    (both were closer before it). Activity is fitted as per-user offsets and return rates, not as the
    distribution of items per user, and the default world's shorter-lived fatigue happens to match it better.

    Not on popularity (Gini) on this log: both worlds are within 0.01 of each other and of the log
    (the calibrated one is closer on the MovieLens-100K-sized reference log, 0.07 against 0.09),
    against synthetic defaults already set to a plausible popularity band (commit 44d0a13).
    Not on distinctness either: on this log the two worlds are within noise of each other (validate
    seeds 0 and 1: 0.432 against 0.458 and 0.439 against 0.442 before the batched core; 0.437 against
    0.386 and 0.459 against 0.392 with per-user streams, which change every draw but not the model).
    """
    data = write_reference_log(tmp_path / "ref", n_users=300, n_items=600, mean_activity=80, seed=1)
    runner = CliRunner()
    res = runner.invoke(app, ["calibrate", "--data", str(data), "--out", str(tmp_path / "cal"), "--budget", "20"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["validate", "--data", str(data), "--calibrated", str(tmp_path / "cal"), "--users", "150",
                              "--fidelity-users", "40", "--out", str(tmp_path / "v")])
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(tmp_path / "v" / "validity.csv")
    head = headline(rows, IN_SAMPLE).pivot(index="fact", columns="world", values="distance")
    assert set(head.index) == set(HEADLINE) - {"ranking"}  # the held-out ranking is out of sample only
    closer = head.loc[list(CALIBRATION_CLOSER)]
    assert (closer["calibrated"] < closer["default"]).all(), head
    out = headline(rows).pivot(index="fact", columns="world", values="distance")
    assert set(out.index) == set(HEADLINE) and out.notna().all().all()  # every fact is judged out of sample too


@pytest.mark.parametrize("fmt", ["generic", "recbole"])
def test_validate_reads_every_format(ref_dir: Path, tmp_path: Path, fmt: str) -> None:
    """The same log as implicit clicks in a generic CSV (0/1: impressions) and as RecBole atomic files."""
    log = pd.read_csv(ref_dir / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    folder = tmp_path / fmt
    folder.mkdir()
    if fmt == "generic":
        log.assign(rating=(log["rating"] >= 4).astype(int)).to_csv(folder / "interactions.csv", index=False)
    else:
        log.to_csv(folder / "log.inter", sep="\t", index=False,
                   header=["user_id:token", "item_id:token", "rating:float", "timestamp:float"])
    res = CliRunner().invoke(app, ["validate", "--data", str(folder), "--embedding", "tfidf", "--users", "30",
                                   "--fidelity-users", "10", "--days", "10", "--out", str(tmp_path / "v")])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "v" / "validity.csv")
    for period in (OUT_OF_SAMPLE, IN_SAMPLE):
        rows = table[table["period"] == period].set_index("statistic")
        if fmt == "generic":  # clicks among impressions, but no ratings to call a click positive
            assert 0 < rows.loc["per impression", "real"] < 1
            assert rows.loc["of consumptions", "note"].startswith(NOT_IN_LOG)
        else:
            assert rows.loc["per impression", "note"].startswith(NOT_IN_LOG) and rows.loc["of consumptions", "real"] > 0


def test_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["validate", "--data", str(tmp_path / "missing")])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "not found" in res.output
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    res = runner.invoke(app, ["validate", "--data", str(tmp_path / "junk")])
    assert res.exit_code == 2 and "cannot tell the data format" in res.output
    res = runner.invoke(app, ["validate", "--data", str(tmp_path / "junk"), "--users", "1"])
    assert res.exit_code == 2 and "--users 1: Input should be greater than or equal to 2" in res.output
    (tmp_path / "one").mkdir()
    pd.DataFrame({"user_id": "u", "item_id": [f"i{i}" for i in range(12)], "timestamp": np.arange(12) * 60}).to_csv(
        tmp_path / "one" / "interactions.csv", index=False)
    res = runner.invoke(app, ["validate", "--data", str(tmp_path / "one"), "--embedding", "tfidf"])
    assert res.exit_code == 2 and "error: validation needs at least 2 users" in res.output


def test_llm_users_join_the_same_report(ref_dir: Path, tmp_path: Path) -> None:
    with FaultServer() as srv:
        world = tmp_path / "world.yaml"
        world.write_text(f"llm:\n  backend: openai\n  base_url: {srv.url}\n  model: loopback\n"
                         f"  structured_output: json_object\n  cache: write\n  cache_path: {tmp_path / 'llm.sqlite'}\n"
                         "  timeout_s: 5\n  max_retries: 0\n")
        args = ["validate", "--data", str(ref_dir), "--embedding", "tfidf", "--users", "20", "--fidelity-users", "10",
                "--days", "10", "--llm-users", "2", "--llm-turns", "4", "--config", str(world), "--out",
                str(tmp_path / "v")]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        assert srv.requests, "the LLM users asked the model"
        assert "llm users: " in res.output and "turns fell back to the parametric user" in res.output
        calls = len(srv.requests)
        again = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "again")])
        assert again.exit_code == 0 and len(srv.requests) == calls, "the second run replays the cache"
    rows = pd.read_csv(tmp_path / "v" / "validity.csv")
    pd.testing.assert_frame_equal(rows, pd.read_csv(tmp_path / "again" / "validity.csv"))
    llm = rows[rows["world"] == "llm users"]
    assert set(llm["fact"]) == set(rows[rows["world"] == "default"]["fact"])
    assert llm.loc[llm["statistic"] == "users", "value"].item() == 2
    assert llm.loc[llm["statistic"] == "AUC (simulated)", "value"].between(0, 1).all()
    assert "AUC (choice model)" not in set(llm["statistic"])  # an LLM user has no utility to read
