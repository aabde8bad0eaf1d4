"""Offline accuracy: each recommender as a ranker of held-out interactions of a reference log.

The x axis of the blueprint's quadrant plot. The log comes from
`recoworld.data.reference_log` (an independent generative process, not RecoWorld's user),
is split in time and turned into a catalog and users by `recoworld.data.prepare_world`,
and the fidelity protocol picks each user's candidates: their held-out items plus
`n_negatives` sampled unseen items (`recoworld.evaluation.fidelity.eval_users`).

A recommender ranks by acting once: it gets an observation whose candidates are those
items (features from the log's catalog) and whose history is the user's last train
interactions (each one a click), and returns a slate of `k` candidates; the slate's order
is its top-k ranking, which is all NDCG@k needs. Recommenders that cannot act on such an
observation are reported as not ranked, with the reason, never given a number:

- `oracle` reads the hidden mindset of a live user, which a log does not have;
- LLM recommenders (`toolrec`) would call the chat model once per logged user;
- anything else that raises (e.g. an RLlib policy trained on another candidate count).
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
from pydantic import Field

from recoworld.agents import LLM_AGENTS, AgentBuilder, Recommender, agent_labels, make_recommender
from recoworld.agents.log_rankers import log_observation
from recoworld.catalog import Catalog
from recoworld.config import StrictModel
from recoworld.evaluation.fidelity import EvalUser, FidelityConfig, eval_users, user_metrics
from recoworld.stats import mean_ci

#: Recommenders that cannot rank a log, and why.
NOT_RANKABLE = {"oracle": "reads the hidden mindset of a live user; a log has none"}


class OfflineConfig(StrictModel):
    """The reference log and the ranking protocol (part of every results.json)."""

    n_users: int = Field(300, ge=10, description="users of the reference log")
    n_items: int = Field(600, ge=20, description="items of the reference log")
    mean_activity: float = Field(40.0, gt=0, description="mean interactions per user")
    seed: int = Field(0, ge=0, description="seed of the log, the negatives and the tie-breaks")
    n_negatives: int = Field(99, ge=1)
    k: int = Field(10, ge=1, description="cutoff of NDCG@k")
    max_users: int = Field(200, ge=1, description="users evaluated")
    history_len: int = Field(20, ge=1, description="train interactions shown as the user's history")


class OfflineRanker:
    """A recommender as a `ChoiceScorer`: one act per user, slate order as the ranking."""

    def __init__(self, agent: Recommender, catalog: Catalog, k: int, history_len: int, seed: int) -> None:
        self.agent, self.catalog, self.k, self.history_len, self.seed = agent, catalog, k, history_len, seed

    def observation(self, history: np.ndarray, candidates: np.ndarray) -> dict[str, np.ndarray]:
        return log_observation(self.catalog, history, candidates, self.history_len)

    def scores(self, user: EvalUser, index: int) -> np.ndarray:
        self.agent.begin_episode(self.seed + index)
        slate = np.asarray(self.agent.act(self.observation(user.history, user.candidates), {}))
        n = len(user.candidates)
        if slate.ndim != 1 or slate.dtype.kind not in "iu" or len(slate) == 0 or slate.min() < 0 or slate.max() >= n:
            raise ValueError(f"act returned {slate!r}, not a slate of candidate positions 0..{n - 1}")
        scores = np.zeros(n)
        for rank, pos in enumerate(dict.fromkeys(slate.tolist())):
            scores[pos] = len(slate) - rank
        return scores


def prepare_reference(config: OfflineConfig) -> tuple[Catalog, list[EvalUser]]:
    """The reference log's catalog and the users (with candidates) every recommender is scored on."""
    from recoworld.data import DataConfig, prepare_world
    from recoworld.data.reference_log import write_reference_log

    with tempfile.TemporaryDirectory(prefix="recoworld-bench-log-") as tmp:
        write_reference_log(tmp, n_users=config.n_users, n_items=config.n_items,
                            mean_activity=config.mean_activity, seed=config.seed)
        real = prepare_world(DataConfig(path=tmp, seed=config.seed))
    fid = FidelityConfig(n_negatives=config.n_negatives, k=config.k, max_users=config.max_users, seed=config.seed)
    return real.catalog, eval_users(real.catalog, real.profiles, real.split.train, real.split.test, fid)


def offline_accuracy(
    agents: list[str], config: OfflineConfig | None = None,
    build: AgentBuilder | None = None,
) -> dict[str, dict[str, Any]]:
    """{agent: {"ndcg@k": {"mean", "ci95", "n"}}} or {agent: {"not_ranked": reason}} for each agent, by its
    label (`recoworld.agents.agent_label`: a plug-in's `name`)."""
    cfg = config or OfflineConfig()
    catalog, users = prepare_reference(cfg)
    make = build or (lambda name, cat, k, seed: make_recommender(name, cat, k, seed))
    out: dict[str, dict[str, Any]] = {}
    for spec, name in zip(agents, agent_labels(agents)):
        if name in NOT_RANKABLE or name in LLM_AGENTS:
            out[name] = {"not_ranked": NOT_RANKABLE.get(name, "an LLM recommender: ranking a log would call the "
                                                              "chat model once per user")}
            continue
        rng = np.random.default_rng([cfg.seed, *map(ord, name)])
        try:
            ranker = OfflineRanker(make(spec, catalog, cfg.k, cfg.seed), catalog, cfg.k, cfg.history_len, cfg.seed)
            ndcg = [user_metrics(ranker.scores(u, i), u.n_positives, cfg.k, rng)[1] for i, u in enumerate(users)]
        except Exception as err:  # any recommender's failure to rank is reported, not raised
            out[name] = {"not_ranked": f"cannot act on a log observation ({type(err).__name__}: {err})"[:300]}
            continue
        mean, half = mean_ci(np.asarray(ndcg))
        out[name] = {f"ndcg@{cfg.k}": {"mean": round(mean, 6), "ci95": round(half, 6), "n": len(ndcg)}}
    return out
