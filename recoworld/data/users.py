"""Real users become `UserProfile`s: personas from demographics and history, interests from history.

What each profile field is made of (only the train log is read):

| field              | source                                                                             |
|--------------------|------------------------------------------------------------------------------------|
| topic_interests    | the user's top `n_topics` genres; each interaction weighs 0.5 + 0.5 * rating on     |
|                    | [0, 1] (watching counts even when disliked; 1 when implicit), split over its genres |
| interest_embedding | with behaviour-learned (mf) embeddings: the user's ALS factors, folded in against   |
|                    | the catalog's item embeddings, so interests and items share one space; else unset   |
| novelty_trait      | the user's percentile of mean item self-information (-log2 popularity), mapped to   |
|                    | [0.05, 0.95]: mainstream users stick to the familiar, niche users seek the new       |
| return_propensity  | from the rate of distinct active days over the user's span, scaled so the return-gap |
|                    | model's neutral rate is matched (0.5 at `ReturnConfig.base_rate` days^-1); drawn      |
|                    | from `traits` for users seen on a single day                                        |
| patience, time budget | not in the data: drawn from the `traits` segment, seeded                        |
| segment            | activity tercile of train interactions: light, regular, heavy                     |
| attributes         | the user table's columns (age, gender, occupation, zip code, ...)                  |
| persona            | one sentence from the attributes and the history                                  |

MovieLens timestamps record when ratings were entered, not when films were watched, so the
return propensity from them is a weak proxy; studies that care should set it from a
segment instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recoworld.catalog import Catalog
from recoworld.config import ReturnConfig
from recoworld.data.attention import decay
from recoworld.data.dataset import Dataset
from recoworld.data.factors import fold_in
from recoworld.data.items import RepresentationConfig
from recoworld.errors import CatalogFormatError
from recoworld.population import Segment, UserProfile

_SECONDS_PER_DAY = 86400.0
_GENDERS = {"m": "man", "f": "woman", "male": "man", "female": "woman"}
#: Traits drawn for what a log cannot tell (patience, daily minutes, and a fallback return propensity).
DEFAULT_TRAITS = Segment(name="data", size=1)


def natural_order(ids: pd.Series | np.ndarray) -> list[str]:
    """Ids sorted so that "2" comes before "10"."""
    return sorted(set(map(str, ids)), key=lambda s: (len(s), s))


def build_profiles(
    dataset: Dataset,
    catalog: Catalog,
    interactions: pd.DataFrame,
    rng: np.random.Generator,
    *,
    n_topics: int = 5,
    traits: Segment = DEFAULT_TRAITS,
    returns: ReturnConfig | None = None,
) -> list[UserProfile]:
    """One profile per user in `interactions` (the train log), in natural user-id order."""
    base_rate = (returns or ReturnConfig()).base_rate
    row = pd.Series(np.arange(len(catalog)), index=catalog.item_ids)
    log = interactions.assign(item=row.reindex(interactions["item_id"].to_numpy()).to_numpy())
    if log["item"].isna().any():
        bad = log.loc[log["item"].isna(), "item_id"].iloc[0]
        raise CatalogFormatError(f"interaction names item_id {bad!r}, which is not in the catalog")
    log["item"] = log["item"].astype(np.int64)
    if dataset.rating_scale is not None and dataset.rating_scale[1] > dataset.rating_scale[0]:
        lo, hi = dataset.rating_scale
        log["weight"] = 0.5 + 0.5 * ((log["rating"].fillna((lo + hi) / 2) - lo) / (hi - lo))
    else:
        log["weight"] = 1.0
    log["info"] = catalog.self_information[log["item"].to_numpy()]
    stats = log.groupby("user_id").agg(
        n=("item", "size"), info=("info", "mean"), rating=("rating", "mean"),
        first=("timestamp", "min"), last=("timestamp", "max"),
    )
    stats["days"] = log.assign(day=log["timestamp"] // _SECONDS_PER_DAY).groupby("user_id")["day"].nunique()
    novelty = 0.05 + 0.9 * stats["info"].rank(pct=True, method="average")
    terciles = stats["n"].rank(pct=True, method="first")
    segment = pd.cut(terciles, [0, 1 / 3, 2 / 3, 1], labels=["light", "regular", "heavy"]).astype(str)
    genres = _genre_weights(log, dataset, catalog)
    users = dataset.users.set_index("user_id")
    factors = _user_factors(log, catalog, stats.index)

    profiles = []
    for uid in natural_order(stats.index):
        s = stats.loc[uid]
        weights = genres.get(uid, {})
        top = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:n_topics]
        interests = {g: round(w, 4) for g, w in top if w > 0} or {catalog.topic_names[0]: 1.0}
        span_days = (s["last"] - s["first"]) / _SECONDS_PER_DAY
        if s["days"] >= 2 and span_days > 0:
            ret = float(np.clip(0.5 * (s["days"] - 1) / span_days / base_rate, 0.01, 0.99))
        else:
            ret = float(np.clip(traits.return_propensity.sample(rng, 1)[0], 0.01, 0.99))
        patience = max(1, round(float(traits.patience.sample(rng, 1)[0])))
        budget = max(1.0, float(traits.time_budget_min.sample(rng, 1)[0]))
        attrs = {k: str(v) for k, v in users.loc[uid].items() if str(v)} if uid in users.index else {}
        profiles.append(UserProfile(
            user_id=uid,
            segment=segment[uid],
            persona=_persona(attrs, list(interests), int(s["n"]), float(s["rating"]), dataset.rating_scale,
                             float(novelty[uid])),
            attributes=attrs,
            topic_interests=interests,
            novelty_trait=float(novelty[uid]),
            patience=patience,
            time_budget_min=budget,
            return_propensity=ret,
            interest_embedding=factors.get(uid),
        ))
    return profiles


def _user_factors(log: pd.DataFrame, catalog: Catalog, user_ids: pd.Index) -> dict[str, list[float]]:
    """user -> ALS user factors in the catalog's space, when its embeddings are behaviour-learned (mf).

    With `interest_half_life_days`, each interaction's confidence decays with its age at the log's
    end, so the interests are where the user's taste stands now (drift), not its lifetime average."""
    if "mf" not in catalog.metadata.get("embedding", "").split("+"):
        return {}
    cfg = RepresentationConfig.model_validate_json(catalog.metadata["config"])
    ids = list(user_ids)
    half_life = cfg.interest_half_life_days
    if half_life == "fit":
        half_life = fit_interest_half_life(log, catalog, cfg.popularity_horizon_days).half_life_days
    history = log.sort_values("timestamp", kind="stable").groupby("user_id")
    items = history["item"].agg(lambda s: s.to_numpy())
    weights = None
    if half_life is not None:
        end = float(log["timestamp"].max())
        times = history["timestamp"].agg(lambda s: s.to_numpy(np.float64))
        weights = [decay(times[u], end, float(half_life)) for u in ids]
    vectors = fold_in(catalog.embeddings, [items[u] for u in ids], cfg.mf_confidence, cfg.mf_regularization,
                      weights)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return {u: [round(float(x), 5) for x in v] for u, v in zip(ids, vectors)}


@dataclass(frozen=True)
class InterestFit:
    """The interests' half-life and the evidence for it: held-out AUC of each half-life tried."""

    half_life_days: float
    auc: dict[float, float]
    users: int  # users the half-life was judged on


def fit_interest_half_life(log: pd.DataFrame, catalog: Catalog, horizon_days: float = 60.0,
                           grid: tuple[float, ...] = (7.0, 14.0, 30.0, 60.0, 120.0, 240.0, np.inf)) -> InterestFit:
    """The half-life of interest drift, fitted on the train log (`log`: user_id, item, timestamp) honestly in
    time: interests folded in from what each user did up to `horizon_days` before the log's end must rank
    the new items they took in those last days (mean AUC against every item they had not taken). A half-life
    replaces no drift (inf) only if it beats it by more than twice the standard error of the users' paired AUC
    differences, so drift is only assumed where the log shows it."""
    cfg = RepresentationConfig.model_validate_json(catalog.metadata["config"])
    t = log["timestamp"].to_numpy(np.float64)
    inner = max(float(t.max()) - horizon_days * _SECONDS_PER_DAY, (float(t.min()) + float(t.max())) / 2)
    before, after = log[t <= inner], log[t > inner]
    past = before.sort_values("timestamp", kind="stable").groupby("user_id")
    items, times = past["item"].agg(lambda s: s.to_numpy()), past["timestamp"].agg(lambda s: s.to_numpy(np.float64))
    future = after.groupby("user_id")["item"].agg(lambda s: np.unique(s.to_numpy()))
    ids = [u for u in future.index if u in items.index and len(items[u]) >= 3]
    targets = [np.setdiff1d(future[u], items[u]) for u in ids]
    ids = [u for u, f in zip(ids, targets) if len(f)]
    targets = [f for f in targets if len(f)]
    if not ids:
        return InterestFit(np.inf, {}, 0)
    emb = catalog.embeddings.astype(np.float64)
    per_user: dict[float, np.ndarray] = {}
    for h in dict.fromkeys((*grid, np.inf)):  # no drift (inf) is the reference, tried once
        vec = fold_in(emb, [items[u] for u in ids], cfg.mf_confidence, cfg.mf_regularization,
                      [decay(times[u], inner, h) for u in ids])
        scores = vec @ emb.T
        values = []
        for j, u in enumerate(ids):
            seen = np.zeros(len(emb), dtype=bool)
            seen[items[u]] = True
            pos = np.zeros(len(emb), dtype=bool)
            pos[targets[j]] = True
            ranks = pd.Series(scores[j][~seen]).rank().to_numpy()
            labels = pos[~seen]
            n_pos, n_neg = labels.sum(), (~labels).sum()
            values.append((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / max(n_pos * n_neg, 1))
        per_user[float(h)] = np.asarray(values)
    auc = {h: float(v.mean()) for h, v in per_user.items()}
    best = max(auc, key=lambda h: (auc[h], h))
    gain = per_user[best] - per_user[np.inf]
    if not gain.mean() > 2.0 * gain.std(ddof=1) / np.sqrt(len(gain)):
        best = np.inf
    return InterestFit(best, auc, len(ids))


def _genre_weights(log: pd.DataFrame, dataset: Dataset, catalog: Catalog) -> dict[str, dict[str, float]]:
    """user -> genre -> summed interaction weight, each interaction split evenly over its item's genres."""
    genre_lists = [list(g) or [catalog.topic_names[t]] for g, t in zip(dataset.items["genres"], catalog.topic)]
    item_genres = pd.Series(genre_lists).iloc[log["item"].to_numpy()].to_numpy()
    per = pd.DataFrame({"user_id": log["user_id"].to_numpy(), "genre": item_genres,
                        "weight": log["weight"].to_numpy() / [len(g) for g in item_genres]}).explode("genre")
    known = per["genre"].isin(catalog.topic_names)
    table = per[known].groupby(["user_id", "genre"])["weight"].sum()
    out: dict[str, dict[str, float]] = {}
    for (uid, genre), w in table.items():
        out.setdefault(uid, {})[genre] = float(w)
    return out


def _persona(attrs: dict[str, str], topics: list[str], n: int, mean_rating: float,
             scale: tuple[float, float] | None, novelty: float) -> str:
    age = attrs.get("age", "")
    gender = _GENDERS.get(attrs.get("gender", "").lower(), "person")
    head = f"{age}-year-old {gender}" if age.isdigit() else f"{gender} aged {age}" if age else gender
    zip_code = f"zip {attrs['zip_code']}" if attrs.get("zip_code") else ""
    details = [d for d in (attrs.get("occupation", ""), zip_code) if d not in ("", "other")]
    where = f" ({', '.join(details)})" if details else ""
    taste = topics[0] if len(topics) == 1 else ", ".join(topics[:-1]) + f" and {topics[-1]}"
    text = f"A {head}{where} with {n} titles in their history, mostly {taste}"
    if scale is not None and mean_rating == mean_rating:
        mid = (scale[0] + scale[1]) / 2
        mood = ("rates generously" if mean_rating > mid + 0.5
                else "is a harsh critic" if mean_rating < mid else "rates fairly")
        text += f"; {mood} (mean {mean_rating:.1f} of {scale[1]:g})"
    taste_for = ("seeks out little-known titles" if novelty > 0.66
                 else "sticks to well-known titles" if novelty < 0.33 else "mixes hits and lesser-known titles")
    return f"{text}; {taste_for}."
