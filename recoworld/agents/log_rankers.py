"""Recommenders trained on the past of an interaction log: the panel `recoworld transfer` measures.

A simulator deserves trust for its verdicts about recommenders only if it orders
recommenders the way real users do. The panel is the instrument of that check: families
that reality ranks differently (non-personalized, recency-aware, neighbourhood, matrix
factorization, content profiles). Each one is trained on the log before a time cutoff and
scores every catalog item for a user; the same scores serve the real users' future (offline
Recall/NDCG) and the simulated users of a world (`recoworld.evaluation.transfer`).

| name               | what it ranks by                                                                |
|--------------------|---------------------------------------------------------------------------------|
| `random`           | nothing: a seeded uniform draw per user                                         |
| `popularity`       | interactions over the whole past                                               |
| `recent-popularity`| interactions in the last `window_days` before the cutoff                       |
| `item-knn`         | cosine item-item similarity (binary co-occurrence), summed over the history      |
| `user-knn`         | the `neighbours` most similar users' items, weighted by cosine similarity       |
| `als`              | implicit ALS (Hu, Koren & Volinsky 2008), the `implicit` package                |
| `bpr`              | Bayesian personalized ranking (Rendle et al. 2009), the `implicit` package      |
| `topic-profile`    | the user's genre mix against the item's genres (ties drawn at random)          |
| `topic-popular`    | the genre match times log-popularity: the content heuristic most platforms start with |

RecoWorld's own recommenders (`greedy`, `diverse`, or your own by reference) join the panel
through `AgentRanker`: each acts once on a log observation (every unseen item a candidate, the
user's last train items as clicked history) and its slate order, `depth` deep, is its ranking.
They rank with the catalog's item features, which `recoworld transfer` learns from the past
(behaviour-learned factors): the very space the simulated users choose in, so they are not in
the default panel (`recoworld.evaluation.transfer` says what that did). `instruct` ranks as
`greedy` on a log (a log carries no instructions), so it is not a separate member.

Matrix factorization comes from `implicit` (a maintained library) rather than RecoWorld's own
ALS, so the panel does not share code with the simulator's representation. Its models run
on one thread: `implicit`'s multithreaded BPR is Hogwild SGD and would not be reproducible.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recoworld.agents.base import Recommender
from recoworld.catalog import Catalog
from recoworld.errors import ConfigError

SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class TrainLog:
    """The past a panel is trained on: rows of (user code, catalog row, time), and the items' genres."""

    users: np.ndarray  # (n,) int64 user codes 0..n_users-1
    items: np.ndarray  # (n,) int64 catalog rows
    times: np.ndarray  # (n,) float64 seconds
    n_users: int
    n_items: int
    cutoff: float  # seconds: nothing in the log is later
    genres: sp.csr_matrix  # (n_items, n_genres) 0/1 membership; an item without genres has none

    @classmethod
    def from_frame(cls, train: pd.DataFrame, user_index: pd.Index, item_index: pd.Index,
                   item_genres: list[list[str]], cutoff: float) -> TrainLog:
        """`train` has user_id, item_id and timestamp; `user_index`/`item_index` give the codes."""
        users = user_index.get_indexer(train["user_id"].to_numpy())
        items = item_index.get_indexer(train["item_id"].to_numpy())
        if (users < 0).any() or (items < 0).any():
            raise ConfigError("the train log names users or items outside the panel's index")
        names = sorted({g for gs in item_genres for g in gs})
        col = {g: j for j, g in enumerate(names)}
        r = [i for i, gs in enumerate(item_genres) for _ in gs]
        c = [col[g] for gs in item_genres for g in gs]
        genres = sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(item_index), max(len(names), 1)))
        return cls(users.astype(np.int64), items.astype(np.int64), train["timestamp"].to_numpy(np.float64),
                   len(user_index), len(item_index), float(cutoff), genres)

    def matrix(self) -> sp.csr_matrix:
        """(n_users, n_items) binary user-item matrix of the past."""
        m = sp.csr_matrix((np.ones(len(self.users)), (self.users, self.items)), shape=(self.n_users, self.n_items))
        m.data[:] = 1.0
        return m


class LogRanker(ABC):
    """Trained once on a `TrainLog`, then scores every item for any of its users (higher = sooner)."""

    name: str = "ranker"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @abstractmethod
    def fit(self, log: TrainLog) -> None: ...

    @abstractmethod
    def scores(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) float scores for the users' codes; the caller masks what they have seen."""


class RandomRanker(LogRanker):
    name = "random"

    def fit(self, log: TrainLog) -> None:
        self.n_items = log.n_items

    def scores(self, users: np.ndarray) -> np.ndarray:
        # One stream per user, so a user's ranking does not depend on who else is scored.
        return np.stack([np.random.default_rng([self.seed, int(u)]).random(self.n_items) for u in users])


class _ItemScoreRanker(LogRanker):
    """A ranker whose scores are the same item vector for every user."""

    item_scores: np.ndarray

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_scores, (len(users), len(self.item_scores))).copy()


class PopularityRanker(_ItemScoreRanker):
    name = "popularity"

    def fit(self, log: TrainLog) -> None:
        self.item_scores = np.bincount(log.items, minlength=log.n_items).astype(np.float64)


class RecentPopularityRanker(_ItemScoreRanker):
    """Interactions in the last `window_days` before the cutoff; all-time counts break ties."""

    name = "recent-popularity"

    def __init__(self, seed: int = 0, window_days: float = 30.0) -> None:
        super().__init__(seed)
        if window_days <= 0:
            raise ConfigError(f"recent-popularity: window_days must be > 0, got {window_days}")
        self.window_days = window_days

    def fit(self, log: TrainLog) -> None:
        recent = log.times > log.cutoff - self.window_days * SECONDS_PER_DAY
        counts = np.bincount(log.items, minlength=log.n_items).astype(np.float64)
        self.item_scores = np.bincount(log.items[recent], minlength=log.n_items) + counts / (counts.max() + 1.0)


def _cosine_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ m


def _top_k_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep each row's k largest entries (the neighbourhood), drop the rest."""
    m = m.tocsr()
    rows, cols, vals = [], [], []
    for r in range(m.shape[0]):
        start, end = m.indptr[r], m.indptr[r + 1]
        if end == start:
            continue
        data, idx = m.data[start:end], m.indices[start:end]
        keep = np.argsort(-data, kind="stable")[:k]
        rows.append(np.full(len(keep), r))
        cols.append(idx[keep])
        vals.append(data[keep])
    if not rows:
        return sp.csr_matrix(m.shape)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=m.shape)


class ItemKNNRanker(LogRanker):
    """Item-based collaborative filtering (Sarwar et al. 2001): cosine on co-occurrence, `neighbours` per item."""

    name = "item-knn"

    def __init__(self, seed: int = 0, neighbours: int = 100) -> None:
        super().__init__(seed)
        self.neighbours = neighbours

    def fit(self, log: TrainLog) -> None:
        self.x = log.matrix()
        items = _cosine_rows(self.x.T.tocsr())
        sim = (items @ items.T).tocsr()
        sim.setdiag(0.0)
        sim.eliminate_zeros()
        self.sim = _top_k_per_row(sim, self.neighbours).T.tocsr()  # column j: item j's neighbours

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.asarray((self.x[users] @ self.sim).todense(), dtype=np.float64)


class UserKNNRanker(LogRanker):
    """User-based collaborative filtering: the `neighbours` most cosine-similar users' items."""

    name = "user-knn"

    def __init__(self, seed: int = 0, neighbours: int = 50) -> None:
        super().__init__(seed)
        self.neighbours = neighbours

    def fit(self, log: TrainLog) -> None:
        self.x = log.matrix()
        self.unit = _cosine_rows(self.x)

    def scores(self, users: np.ndarray) -> np.ndarray:
        sim = (self.unit[users] @ self.unit.T).tocsr()
        sim[np.arange(len(users)), users] = 0.0  # a user is not their own neighbour
        sim.eliminate_zeros()
        return np.asarray((_top_k_per_row(sim, self.neighbours) @ self.x).todense(), dtype=np.float64)


class _ImplicitRanker(LogRanker):
    """A model of the `implicit` package, fitted on the binary matrix; score = user · item factors."""

    def fit(self, log: TrainLog) -> None:
        import implicit.cpu  # noqa: F401  (loads its BLAS before the limit, so the limit covers it)
        from threadpoolctl import threadpool_limits

        self.x = log.matrix()
        with threadpool_limits(1, "blas"):  # implicit's solvers run their own loops; BLAS threads would contend
            model = self._model()
            model.fit(self.x, show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float64)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float64)

    def _model(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def scores(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors[users] @ self.item_factors.T


class ALSRanker(_ImplicitRanker):
    name = "als"

    def __init__(self, seed: int = 0, factors: int = 64, regularization: float = 0.05, alpha: float = 2.0,
                 iterations: int = 15) -> None:
        super().__init__(seed)
        self.factors, self.regularization, self.alpha, self.iterations = factors, regularization, alpha, iterations

    def _model(self):  # type: ignore[no-untyped-def]
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                                       iterations=self.iterations, random_state=self.seed, num_threads=1)


class BPRRanker(_ImplicitRanker):
    name = "bpr"

    def __init__(self, seed: int = 0, factors: int = 64, learning_rate: float = 0.05, regularization: float = 0.01,
                 iterations: int = 100) -> None:
        super().__init__(seed)
        self.factors, self.learning_rate = factors, learning_rate
        self.regularization, self.iterations = regularization, iterations

    def _model(self):  # type: ignore[no-untyped-def]
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(factors=self.factors, learning_rate=self.learning_rate,
                                           regularization=self.regularization, iterations=self.iterations,
                                           random_state=self.seed, num_threads=1)


class TopicProfileRanker(LogRanker):
    """The user's genre mix (share of their history per genre) against each item's genres, ties at random."""

    name = "topic-profile"

    def fit(self, log: TrainLog) -> None:
        self.x = log.matrix()
        counts = np.asarray(log.genres.sum(axis=1)).ravel()
        self.item_genres = sp.diags(1.0 / np.maximum(counts, 1.0)) @ log.genres  # each genre 1 / its item's count
        profile = self.x @ self.item_genres
        self.profile = sp.diags(1.0 / np.maximum(np.asarray(profile.sum(axis=1)).ravel(), 1e-12)) @ profile

    def match(self, users: np.ndarray) -> np.ndarray:
        return np.asarray((self.profile[users] @ self.item_genres.T).todense(), dtype=np.float64)

    def scores(self, users: np.ndarray) -> np.ndarray:
        noise = np.stack([np.random.default_rng([self.seed, int(u)]).random(self.item_genres.shape[0])
                          for u in users])
        return self.match(users) + 1e-9 * noise


class TopicPopularRanker(TopicProfileRanker):
    """Genre match times log(1 + popularity): the content heuristic with a crowd prior."""

    name = "topic-popular"

    def fit(self, log: TrainLog) -> None:
        super().fit(log)
        self.log_pop = np.log1p(np.bincount(log.items, minlength=log.n_items).astype(np.float64))

    def scores(self, users: np.ndarray) -> np.ndarray:
        return self.match(users) * (1.0 + self.log_pop)


def log_observation(catalog: Catalog, history: np.ndarray, candidates: np.ndarray,
                    history_len: int) -> dict[str, np.ndarray]:
    """What a recommender sees of a logged user, in the env's observation layout: `candidates` (catalog rows)
    to choose from, and the last `history_len` of `history` (oldest first) as clicked items."""
    feats, h = catalog.item_features, history_len
    hist = np.full(h, -1, dtype=np.int64)
    recent = history[-h:]
    hist[h - len(recent):] = recent  # newest last, padding first, as the env keeps it
    hist_feat = feats[np.maximum(hist, 0)].copy()
    hist_feat[hist < 0] = 0.0
    return {
        "candidate_ids": candidates.astype(np.int64),
        "candidate_features": feats[candidates],
        "candidate_mask": np.ones(len(candidates), dtype=np.int8),
        "history_ids": hist,
        "history_features": hist_feat,
        "history_reactions": np.where(hist >= 0, 1, -1).astype(np.int64),
        "history_dwell": np.where(hist >= 0, catalog.duration_min[np.maximum(hist, 0)], 0.0).astype(np.float32),
        "instruction": np.zeros(4 + catalog.embedding_dim, dtype=np.float32),
        "context": np.zeros(4, dtype=np.float32),
    }


class AgentRanker(LogRanker):
    """A RecoWorld `Recommender` as a panel member (module docstring): its slate of the `depth` best unseen
    items, in order, then every other item by past popularity."""

    def __init__(self, name: str, catalog: Catalog, seed: int = 0, depth: int = 200, history_len: int = 20) -> None:
        from recoworld.agents import make_recommender

        super().__init__(seed)
        self.name, self.catalog, self.history_len = name, catalog, history_len
        self.depth = min(depth, len(catalog))
        self.agent: Recommender = make_recommender(name, catalog, self.depth, seed)

    def fit(self, log: TrainLog) -> None:
        if log.n_items != len(self.catalog):
            raise ConfigError(f"{self.name}: the catalog has {len(self.catalog)} items, the log {log.n_items}")
        order = np.lexsort((log.times, log.users))
        bounds = np.searchsorted(log.users[order], np.arange(log.n_users + 1))
        self.histories = [log.items[order[a:b]] for a, b in itertools.pairwise(bounds)]
        self.popularity = np.bincount(log.items, minlength=log.n_items).astype(np.float64)

    def scores(self, users: np.ndarray) -> np.ndarray:
        out = np.empty((len(users), len(self.catalog)))
        for j, u in enumerate(users.tolist()):
            history = self.histories[u]
            unseen = np.setdiff1d(np.arange(len(self.catalog)), history)
            self.agent.begin_episode(self.seed + u)
            slate = np.asarray(self.agent.act(log_observation(self.catalog, history, unseen, self.history_len), {}))
            top = unseen[list(dict.fromkeys(slate.tolist()))]
            # Ranked items first (depth, depth - 1, ...), then the rest by popularity, below every ranked one.
            out[j] = self.popularity / (self.popularity.max() + 1.0) - len(top) - 1.0
            out[j, top] = np.arange(len(top), 0, -1, dtype=np.float64)
        return out


PANEL: dict[str, type[LogRanker]] = {cls.name: cls for cls in (
    RandomRanker, PopularityRanker, RecentPopularityRanker, ItemKNNRanker, UserKNNRanker, ALSRanker, BPRRanker,
    TopicProfileRanker, TopicPopularRanker)}


def make_ranker(name: str, seed: int = 0, catalog: Catalog | None = None) -> LogRanker:
    """A panel member by name: `PANEL`, or with a `catalog`, a RecoWorld recommender by name or reference
    (`greedy`, `diverse`, `module:Class`, ...) as an `AgentRanker`. An unknown name lists the known ones."""
    if name in PANEL:
        return PANEL[name](seed)
    if catalog is not None:
        from recoworld.agents import check_recommender_names

        check_recommender_names([name])
        return AgentRanker(name, catalog, seed)
    raise ConfigError(f"unknown panel recommender {name!r}; choose from {', '.join(PANEL)} or a RecoWorld "
                      "recommender (greedy, diverse, module:Class)")
