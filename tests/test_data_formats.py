from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recoworld.data import DataConfig, detect_format, load_dataset, prepare_world, temporal_split
from recoworld.data.reference_log import write_reference_log
from recoworld.data.sample import write_movielens_100k
from recoworld.data.split import Leakage
from recoworld.errors import CatalogFormatError, ConfigError


@pytest.fixture(scope="module")
def ml(tmp_path_factory: pytest.TempPathFactory):
    return load_dataset(write_movielens_100k(tmp_path_factory.mktemp("ml"), n_users=30, n_items=80, seed=2))


def _same_log(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    cols = ["user_id", "item_id", "rating", "timestamp"]
    key = ["timestamp", "user_id", "item_id"]
    return a[cols].sort_values(key).reset_index(drop=True).equals(b[cols].sort_values(key).reset_index(drop=True))


def test_recbole_atomic_files_match_the_same_data(tmp_path: Path, ml) -> None:
    root = tmp_path / "ml-100k"
    root.mkdir()
    inter = ml.interactions
    with (root / "ml-100k.inter").open("w") as fh:
        fh.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for r in inter.itertuples():
            fh.write(f"{r.user_id}\t{r.item_id}\t{r.rating:g}\t{r.timestamp}\n")
    with (root / "ml-100k.item").open("w") as fh:
        fh.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\n")
        for r in ml.items.itertuples():
            fh.write(f"{r.item_id}\t{r.title.rsplit(' (', 1)[0]}\t{int(r.year)}\t{' '.join(r.genres)}\n")
    with (root / "ml-100k.user").open("w") as fh:
        fh.write("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n")
        for r in ml.users.itertuples():
            fh.write(f"{r.user_id}\t{r.age}\t{r.gender}\t{r.occupation}\t{r.zip_code}\n")
    assert detect_format(root) == "recbole"
    ds = load_dataset(root)
    assert ds.name == "ml-100k" and _same_log(ds.interactions, ml.interactions)
    assert list(ds.items["genres"]) == list(ml.items["genres"])
    assert list(ds.items["year"]) == list(ml.items["year"])
    assert ds.users.set_index("user_id").equals(ml.users.set_index("user_id"))
    (root / "ml-100k.inter").write_text("user_id\titem_id\n1\t2\n")
    with pytest.raises(CatalogFormatError, match="name:type"):
        load_dataset(root)


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_generic_tables_with_aliases(tmp_path: Path, ml, suffix: str) -> None:
    inter = ml.interactions.rename(columns={"user_id": "userId", "item_id": "movieId"})
    items = ml.items.assign(genres=["|".join(g) for g in ml.items["genres"]]) if suffix == "csv" else ml.items
    items = items.assign(features=[[float(i), 1.0, -float(i)] for i in range(len(items))]) \
        if suffix != "csv" else items

    def write(frame: pd.DataFrame, name: str) -> None:
        path = tmp_path / f"{name}.{suffix}"
        if suffix == "csv":
            frame.to_csv(path, index=False)
        elif suffix == "jsonl":
            frame.to_json(path, orient="records", lines=True)
        else:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)

    write(inter, "interactions")
    write(items, "items")
    write(ml.users, "users")
    ds = load_dataset(tmp_path)
    assert detect_format(tmp_path) == "generic"
    assert _same_log(ds.interactions, ml.interactions)
    assert list(ds.items["genres"]) == list(ml.items["genres"])
    assert ds.users["occupation"].tolist() == ml.users["occupation"].tolist()
    if suffix != "csv":  # list columns survive JSONL and Parquet and become multimodal features
        world = prepare_world(DataConfig(path=tmp_path, representation={"embedding": "features"}))
        assert world.catalog.multimodal.shape == (len(ml.items), 3)
        assert world.catalog.metadata["embedding"] == "features"


def test_generic_single_file_string_times_and_explicit_columns(tmp_path: Path) -> None:
    log = tmp_path / "clicks.csv"
    log.write_text("who,what,when\nu1,a,2024-01-02T10:00:00Z\nu1,b,2024-01-01T09:00:00Z\nu2,a,2024-01-03\n")
    with pytest.raises(CatalogFormatError, match="no 'user_id' column"):
        load_dataset(log)
    with pytest.raises(ConfigError, match="'nobody' is not a column"):
        load_dataset(log, columns={"user_id": "nobody", "item_id": "what"})
    ds = load_dataset(log, columns={"user_id": "who", "item_id": "what", "timestamp": "when"})
    assert ds.rating_scale is None and ds.interactions["rating"].isna().all()
    assert ds.interactions["item_id"].tolist() == ["b", "a", "a"]  # sorted by time
    assert ds.interactions["timestamp"].iloc[0] == 1704099600
    assert list(ds.items["title"]) == ["item b", "item a"]  # no item table: titled by id, in order of appearance
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps({"user_id": "u", "item_id": "i", "timestamp": t}) for t in ["x", "y"]))
    with pytest.raises(CatalogFormatError, match="'x' is neither a number nor a date"):
        load_dataset(bad)


def test_implicit_log_gets_neutral_quality(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user_id": rng.integers(0, 12, 300), "item_id": rng.integers(0, 40, 300),
                          "timestamp": np.arange(300)})
    frame.to_parquet(tmp_path / "interactions.parquet")
    world = prepare_world(DataConfig(path=tmp_path, representation={"embedding": "tfidf"}, min_train=2))
    assert np.allclose(world.catalog.quality, 0.5)
    assert world.catalog.topic_names == ("other",)


def test_time_splits(ml) -> None:
    per_user = temporal_split(ml.interactions, 0.25, "per_user", min_train=3)
    assert len(per_user.train) + len(per_user.test) == len(ml.interactions)
    last_train = per_user.train.groupby("user_id")["timestamp"].max()
    first_test = per_user.test.groupby("user_id")["timestamp"].min()
    assert (first_test >= last_train.reindex(first_test.index)).all()  # each user's test is their latest
    counts = ml.interactions["user_id"].value_counts()
    held = per_user.test["user_id"].value_counts()
    assert (held == np.ceil(counts.loc[held.index] * 0.25)).all()
    glob = temporal_split(ml.interactions, 0.25, "global")
    assert glob.train["timestamp"].max() <= glob.cutoff < glob.test["timestamp"].min()
    assert abs(len(glob.test) / len(ml.interactions) - 0.25) < 0.05
    with pytest.raises(ConfigError, match="test_fraction"):
        temporal_split(ml.interactions, 1.5)
    with pytest.raises(ConfigError, match="split mode"):
        temporal_split(ml.interactions, 0.2, "random")  # type: ignore[arg-type]


def test_the_default_split_is_one_global_cutoff(ml, tmp_path: Path) -> None:
    """Issue 27: what every command splits by default is one time cutoff, so nothing fitted reads the future."""
    assert temporal_split(ml.interactions).mode == "global"
    write_movielens_100k(tmp_path / "ml", n_users=30, n_items=80, seed=2)
    world = prepare_world(DataConfig(path=tmp_path / "ml", representation={"embedding": "tfidf"}))
    assert world.split.mode == "global" and world.split.cutoff is not None
    assert world.split.train["timestamp"].max() <= world.split.cutoff
    # Catalog popularity and profiles read the part before the cutoff only.
    assert world.catalog.metadata["train_interactions"] == str(len(world.split.train))
    assert {p.user_id for p in world.profiles} == set(world.split.train["user_id"])


def test_leakage_by_hand() -> None:
    # a: items i1..i4 at t=1..4; b: i1, i4, i6, i7 at t=5..8. Per user, each user's last quarter is held out:
    # a's i4 (t=4) and b's i7 (t=8). Train rows after t=4: b's three of six. a's future holds half of train,
    # b's none (mean 1/4); a's held-out i4 is trained on by b later (t=6), b's i7 by nobody: 1 of 2.
    log = pd.DataFrame({"user_id": ["a"] * 4 + ["b"] * 4, "item_id": ["i1", "i2", "i3", "i4", "i1", "i4", "i6", "i7"],
                        "rating": 1.0, "timestamp": np.arange(1, 9)})
    leak = temporal_split(log, 0.25, "per_user").leakage()
    assert leak == Leakage(3, 0.5, 0.25, 0.5) and leak.leaks
    assert "LEAKS the future" in temporal_split(log, 0.25, "per_user").describe()
    glob = temporal_split(log, 0.25, "global")
    assert glob.leakage() == Leakage(0, 0.0, 0.0, 0.0)
    assert "no train interaction is later than a test interaction" in glob.describe()


def test_per_user_split_leaks_on_a_reference_log_and_global_does_not(tmp_path: Path) -> None:
    log = load_dataset(write_reference_log(tmp_path / "ref", n_users=80, n_items=200, mean_activity=40,
                                           seed=4)).interactions
    per_user = temporal_split(log, 0.2, "per_user", min_train=5)
    leak = per_user.leakage()
    # Brute force: per test user, the share of train rows after their first held-out interaction; per test
    # interaction, whether another user's train interaction with the item comes later.
    train, test = per_user.train, per_user.test
    first = test.groupby("user_id")["timestamp"].min()
    assert leak.mean_future_share == pytest.approx(np.mean([(train["timestamp"] > t).mean() for t in first]))
    pairs = test.reset_index().merge(train, on="item_id", suffixes=("", "_train"))
    later = pairs[(pairs["user_id_train"] != pairs["user_id"]) & (pairs["timestamp_train"] > pairs["timestamp"])]
    assert leak.test_items_seen_later == pytest.approx(later["index"].nunique() / len(test))
    assert leak.train_rows_after_cutoff == int((train["timestamp"] > test["timestamp"].min()).sum())
    # On a log shaped like MovieLens the leak is large: a third or more of train is some test user's future.
    assert leak.leaks and leak.mean_future_share > 0.3 and leak.test_items_seen_later > 0.5
    glob = temporal_split(log, 0.2, "global")
    assert glob.leakage().train_rows_after_cutoff == 0 and not glob.leakage().leaks
    assert (glob.train["timestamp"] <= glob.cutoff).all() and (glob.test["timestamp"] > glob.cutoff).all()
