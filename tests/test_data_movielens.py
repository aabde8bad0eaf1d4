from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recoworld.data import DataConfig, load_dataset, prepare_world
from recoworld.data.sample import write_movielens_100k
from recoworld.errors import CatalogFormatError


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_movielens_100k(tmp_path_factory.mktemp("ml-100k"), n_users=40, n_items=120, seed=5)


def _write_1m(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "2::Jumanji (1995)::Adventure|Children's|Fantasy\n"
        "3::Amélie (2001)::Comedy|Romance\n".encode("latin-1")
    )
    (root / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n", encoding="latin-1")
    (root / "ratings.dat").write_text(
        "1::1::5::978300760\n1::3::4::978300800\n1::2::3::978302109\n2::2::4::978298413\n2::3::2::978299000\n",
        encoding="latin-1",
    )
    return root


def test_movielens_100k_loads_items_users_and_ratings(ml100k: Path) -> None:
    ds = load_dataset(ml100k)
    assert ds.name == "ml-100k" and ds.rating_scale == (1.0, 5.0)
    raw = (ml100k / "u.data").read_text().splitlines()
    assert len(ds.interactions) == len(raw) and ds.n_users == 40 and len(ds.items) == 120
    assert (np.diff(ds.interactions["timestamp"].to_numpy()) >= 0).all()  # ordered in time
    first = (ml100k / "u.item").read_text(encoding="latin-1").splitlines()[0].split("|")
    item = ds.items.iloc[0]
    flags = first[5:]
    genres_on = [g for g, f in zip(
        ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
         "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"],
        flags) if f == "1"]
    assert item["title"] == first[1] and item["genres"] == genres_on
    assert item["year"] == int(first[2][-4:])
    user = ds.users.iloc[0]
    assert set(ds.users.columns) == {"user_id", "age", "gender", "occupation", "zip_code"}
    assert user["gender"] in ("M", "F") and user["age"].isdigit()


def test_movielens_1m_dat_files_latin1_and_codes(tmp_path: Path) -> None:
    ds = load_dataset(_write_1m(tmp_path / "ml-1m"))
    assert ds.name == "ml-1m" and len(ds.interactions) == 5
    assert ds.items.set_index("item_id").loc["3", "title"] == "Amélie (2001)"  # latin-1 decoded
    assert ds.items.set_index("item_id").loc["1", "genres"] == ["Animation", "Children's", "Comedy"]
    assert ds.items.set_index("item_id").loc["1", "year"] == 1995  # from the title
    users = ds.users.set_index("user_id")
    assert users.loc["1", "age"] == "under 18" and users.loc["1", "occupation"] == "K-12 student"
    assert users.loc["2", "age"] == "56+" and users.loc["2", "occupation"] == "self-employed"


def test_bad_movielens_folders_name_the_problem(tmp_path: Path, ml100k: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "u.data").write_text((ml100k / "u.data").read_text())
    with pytest.raises(CatalogFormatError, match=r"u\.item"):
        load_dataset(broken)
    rated = (ml100k / "u.data").read_text().split("\t")[1]
    lines = (ml100k / "u.item").read_text(encoding="latin-1").splitlines(keepends=True)
    (broken / "u.item").write_text("".join(x for x in lines if not x.startswith(f"{rated}|")), encoding="latin-1")
    with pytest.raises(CatalogFormatError, match=f"item_id '{rated}'"):
        load_dataset(broken)
    with pytest.raises(CatalogFormatError, match="cannot tell the data format"):
        load_dataset(tmp_path / "broken" / ".." / "broken" / "u.data")
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "nowhere")


def test_world_from_movielens_follows_the_documented_rules(ml100k: Path) -> None:
    world = prepare_world(DataConfig(path=ml100k, representation={"embedding": "tfidf"}))
    ds, cat, train = world.dataset, world.catalog, world.split.train
    assert len(cat) == len(ds.items) and list(cat.item_ids) == list(ds.items["item_id"])
    # Topic: the item's rarest genre; text: title and genres.
    counts = ds.items["genres"].explode().value_counts()
    for i in range(10):
        genres = ds.items["genres"].iloc[i]
        rarest = min(genres, key=lambda g: (counts[g], g))
        assert cat.topic_names[cat.topic[i]] == rarest
        assert all(g in cat.descriptions[i] for g in genres) and cat.titles[i] in cat.descriptions[i]
    # Popularity from train counts (+1), quality from shrunk mean ratings.
    n_train = train["item_id"].value_counts().reindex(cat.item_ids, fill_value=0).to_numpy()
    assert np.allclose(cat.popularity, (n_train + 1) / (n_train + 1).sum(), atol=1e-6)
    means = train.groupby("item_id")["rating"].mean()
    well_liked = means[train["item_id"].value_counts() >= 5].idxmax()
    disliked = means[train["item_id"].value_counts() >= 5].idxmin()
    idx = {item: i for i, item in enumerate(cat.item_ids)}
    assert cat.quality[idx[well_liked]] > cat.quality[idx[disliked]]
    assert ((cat.quality >= 0) & (cat.quality <= 1)).all()
    assert np.allclose(np.linalg.norm(cat.embeddings, axis=1), 1.0, atol=1e-5)
    assert len({tuple(c) for c in cat.semantic_ids}) == len(cat)  # unique IDs
    assert cat.metadata["embedding"] == "tfidf"


def test_profiles_come_from_each_users_history(ml100k: Path) -> None:
    world = prepare_world(DataConfig(path=ml100k, representation={"embedding": "tfidf"}, seed=3))
    ds, train = world.dataset, world.split.train
    assert [p.user_id for p in world.profiles] == sorted(train["user_id"].unique(), key=lambda s: (len(s), s))
    genres = ds.items.set_index("item_id")["genres"]
    for profile in world.profiles[:10]:
        history = train[train["user_id"] == profile.user_id]
        share = history["item_id"].map(genres).explode().value_counts()
        top = next(iter(profile.topic_interests))
        assert top in share.index[:3]  # the favourite is among the most watched genres
        attrs = ds.users.set_index("user_id").loc[profile.user_id]
        assert profile.attributes["occupation"] == attrs["occupation"]
        assert attrs["age"] in profile.persona and str(len(history)) in profile.persona
    # Mainstream users (popular items) get lower novelty traits than niche users.
    info = {p.user_id: p.novelty_trait for p in world.profiles}
    pop = train.assign(pop=train["item_id"].map(train["item_id"].value_counts())).groupby("user_id")["pop"].mean()
    assert np.corrcoef(pop.loc[list(info)].to_numpy(), list(info.values()))[0, 1] < -0.5
    again = prepare_world(DataConfig(path=ml100k, representation={"embedding": "tfidf"}, seed=3))
    assert again.profiles == world.profiles
