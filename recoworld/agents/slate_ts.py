"""Slate recommendation with a Bayesian GRU and (in-slate) Thompson sampling.

After Eide, Leslie & Frigessi, "Dynamic Slate Recommendation with Gated Recurrent Units
and Thompson Sampling" (Data Mining and Knowledge Discovery, 2022).

## Model
- Items: a vector v_i in R^d (d = 25) per item, with a prior that pools items of one
  group (a catalog subtopic or topic; FINN's category): v_i ~ N(mu_g, sigma_g^2 I),
  mu_g ~ N(0, prior_group_scale^2 I).
- User: a GRU reads the vectors of the items the user clicked (the "no click" item
  included) and its state after step t-1 is the user's position z_t in item space.
- Clicks: one categorical per step over "no click" and the items shown,
  P(click i) ∝ exp(s(z_t, v_i)), P(no click) ∝ exp(b_n) with one bias per slate length n,
  s = z·v or -‖z - v‖. Padded and reserved slots score -100 and logits are clamped to
  [-100, 20], as in the authors' code.

## Inference
Mean-field Gaussian posterior q(v_i) q(mu_g) over item and group vectors, fitted by
maximising the ELBO with one reparameterised draw per step. The global parameters (GRU
weights, no-click biases, group scales sigma_g) are point estimates: they are few and
shared by everyone, while the item vectors are where uncertainty, and so exploration,
lives. An item never shown keeps the posterior of its group.

## Policies
- `greedy`: the posterior mean.
- `ts`: Thompson sampling, one posterior draw per slate.
- `inslate`: in-slate Thompson sampling, K draws for a slate of K, each ranking the
  candidates (`inslate_fill`). With `inslate_rule="per-slot"` (default, the rule of the
  paper's text) slot k gets the best not-yet-chosen item of draw k. With
  `"rank-major"` (the authors' public code) the slots take the rank-1 items of draws
  1..K, then their rank-2 items, and so on, skipping repeats.

## Training
Online from the env's feedback (refit every `refit_every` turns on a buffer of recent
episodes), offline from logged trajectories (`fit_trajectories`) or from FINN.no data
(`recoworld.data.finn.load_finn`, then `SlateGRUModel.fit`). A RecoWorld turn becomes
FINN steps by `recoworld.data.finn.turn_events`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recoworld.agents.base import Observation, Recommender
from recoworld.agents.torch_utils import load_checkpoint, save_checkpoint, torch_generator
from recoworld.catalog import Catalog
from recoworld.config import StrictModel, build
from recoworld.data.finn import (
    ITEM_OFFSET,
    NO_CLICK,
    PAD,
    UNKNOWN,
    Event,
    SlateInteractions,
    from_trajectories,
    pack_events,
    turn_events,
)
from recoworld.errors import ConfigError

Score = Literal["dot", "distance"]
LOGIT_MIN, LOGIT_MAX = -100.0, 20.0


class SlateTSConfig(StrictModel):
    """Model, policy and training settings of `SlateTSRecommender`."""

    policy: Literal["greedy", "ts", "inslate"] = "inslate"
    inslate_rule: Literal["per-slot", "rank-major"] = "per-slot"
    item_dim: int = Field(25, ge=1, le=512, description="dimension of item vectors and user state")
    score: Score = "dot"
    groups: Literal["subtopic", "topic"] = Field("subtopic", description="catalog column for the item prior")
    prior_group_scale: float = Field(1.0, gt=0, description="prior sd of the group means")
    init_scale: float = Field(0.5, gt=0, description="initial posterior sd of item and group vectors")
    learn_online: bool = True
    refit_every: int = Field(100, ge=1, description="turns between two online refits")
    refit_steps: int = Field(60, ge=1, description="gradient steps per refit")
    batch_size: int = Field(32, ge=1, description="sequence windows per gradient step")
    lr: float = Field(0.02, gt=0)
    max_steps: int = Field(50, ge=1, description="steps per training window and of history read at act time")
    buffer_episodes: int = Field(500, ge=1, description="most recent episodes kept for online refits")


def _inverse_softplus(x: float) -> float:
    return math.log(math.expm1(x))


def similarity(z: torch.Tensor, v: torch.Tensor, score: Score) -> torch.Tensor:
    """s(z, v) over the last axis: z·v, or -‖z - v‖ (kept differentiable at z = v)."""
    if score == "dot":
        return (z * v).sum(-1)
    return -((z - v) ** 2).sum(-1).clamp_min(1e-10).sqrt()


def slate_logits(z: torch.Tensor, slate_vecs: torch.Tensor, slate: torch.Tensor,
                 noclick_bias: torch.Tensor, score: Score) -> torch.Tensor:
    """Logits of the click categorical over the slots of each slate.

    `z` (..., d), `slate_vecs` (..., S, d), `slate` (..., S) item indices with slot 0
    holding the no-click item; returns (..., S). Slot 0 gets b[len(slate)] where it is
    the no-click option, reserved and padded slots get -100, all clamped to [-100, 20].
    """
    s = similarity(z.unsqueeze(-2), slate_vecs, score).masked_fill(slate <= UNKNOWN, LOGIT_MIN)
    lengths = (slate != PAD).sum(-1)
    first = torch.where(slate[..., 0] == NO_CLICK, noclick_bias[lengths], torch.full_like(s[..., 0], LOGIT_MIN))
    return torch.cat([first.unsqueeze(-1), s[..., 1:]], dim=-1).clamp(LOGIT_MIN, LOGIT_MAX)


def inslate_fill(rankings: np.ndarray, k: int, rule: str = "per-slot") -> np.ndarray:
    """In-slate Thompson sampling: fill k slots from per-draw rankings (draws, ranks), best first.

    `per-slot`: slot j takes the best item of draw j not chosen for an earlier slot.
    `rank-major`: consider the rank-1 items of draws 1..D, then their rank-2 items, ...;
    repeats are skipped.
    """
    rankings = np.asarray(rankings)
    if rule == "per-slot":
        if len(rankings) < k:
            raise ValueError(f"per-slot filling needs one draw per slot: {len(rankings)} draws for k={k}")
        chosen: list[int] = []
        for draw in rankings[:k]:
            free = [int(i) for i in draw if int(i) not in chosen]
            if not free:
                raise ValueError(f"draw {len(chosen)} holds no item that is not already in the slate")
            chosen.append(free[0])
        return np.asarray(chosen, dtype=np.int64)
    if rule != "rank-major":
        raise ValueError(f"rule must be 'per-slot' or 'rank-major', got {rule!r}")
    order = rankings.T.reshape(-1)
    _, first = np.unique(order, return_index=True)
    picks = order[np.sort(first)][:k]
    if len(picks) < k:
        raise ValueError(f"the rankings hold only {len(picks)} distinct items, need k={k}")
    return picks.astype(np.int64)


class SlateGRUModel(nn.Module):
    """The variational Bayesian GRU slate model over item indices (0..2 reserved, see finn.py)."""

    item_group: torch.Tensor  # (N,) each item's group: a buffer (`register_buffer`), moved with the module

    def __init__(self, item_group: np.ndarray, width: int, dim: int = 25, score: Score = "dot",
                 prior_group_scale: float = 1.0, init_scale: float = 0.5, seed: int | None = None) -> None:
        super().__init__()
        item_group = np.asarray(item_group, dtype=np.int64)
        if item_group.ndim != 1 or (item_group < 0).any():
            raise ConfigError("item_group must be a 1-D array of group indices >= 0")
        if width < 2:
            raise ConfigError(f"width (slate slots with the no-click slot) must be >= 2, got {width}")
        gen = torch_generator(seed)
        n, g = len(item_group), int(item_group.max()) + 1
        self.width, self.dim, self.score, self.prior_group_scale = width, dim, score, prior_group_scale
        self.register_buffer("item_group", torch.as_tensor(item_group))
        rho = _inverse_softplus(init_scale)
        self.item_mean = nn.Parameter(0.01 * torch.randn(n, dim, generator=gen))
        self.item_rho = nn.Parameter(torch.full((n, dim), rho))
        self.group_mean = nn.Parameter(0.01 * torch.randn(g, dim, generator=gen))
        self.group_rho = nn.Parameter(torch.full((g, dim), rho))
        self.group_scale_raw = nn.Parameter(torch.full((g,), rho))
        self.noclick_bias = nn.Parameter(torch.zeros(width + 1))
        self.gru = nn.GRU(dim, dim, batch_first=True)
        bound = 1.0 / math.sqrt(dim)
        with torch.no_grad():
            for p in self.gru.parameters():
                p.copy_(torch.empty_like(p).uniform_(-bound, bound, generator=gen))
        self._optimizer: torch.optim.Optimizer | None = None
        self._lr: float | None = None

    @property
    def n_items(self) -> int:
        return int(self.item_mean.shape[0])

    # ------------------------------------------------------------------ the probabilistic model

    def vectors(self, idx: torch.Tensor, generator: torch.Generator | None = None, draws: int = 1) -> torch.Tensor:
        """Item vectors for `idx`: the posterior mean (generator None) or `draws` joint posterior draws.

        Draws are per distinct item, so an item that appears twice gets one value per draw.
        Shape: idx.shape + (d,) for the mean, (draws,) + idx.shape + (d,) for draws.
        """
        if generator is None:
            return self.item_mean[idx]
        uniq, inverse = torch.unique(idx, return_inverse=True)
        eps = torch.randn((draws, len(uniq), self.dim), generator=generator)
        rows = self.item_mean[uniq] + F.softplus(self.item_rho[uniq]) * eps
        return rows[:, inverse]

    def user_states(self, click_vecs: torch.Tensor) -> torch.Tensor:
        """z_t for every step: the GRU output after reading the clicks of steps < t. (B, T, d) -> (B, T, d)."""
        inputs = torch.cat([torch.zeros_like(click_vecs[:, :1]), click_vecs[:, :-1]], dim=1)
        return self.gru(inputs)[0]

    def log_likelihood(self, click: torch.Tensor, click_idx: torch.Tensor, slate: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, T) log P(click_idx | history, slate) under one draw (or the mean); 0 where unobserved."""
        idx = torch.cat([click.reshape(-1), slate.reshape(-1)])
        vecs = self.vectors(idx, generator)
        vecs = vecs[0] if generator is not None else vecs
        n_click = click.numel()
        click_vecs = vecs[:n_click].reshape(*click.shape, self.dim)
        slate_vecs = vecs[n_click:].reshape(*slate.shape, self.dim)
        z = self.user_states(click_vecs)
        logits = slate_logits(z, slate_vecs, slate, self.noclick_bias, self.score)
        ll = torch.log_softmax(logits, dim=-1).gather(-1, click_idx.unsqueeze(-1)).squeeze(-1)
        observed = (click != PAD) & (click != UNKNOWN)
        return torch.where(observed, ll, torch.zeros_like(ll))

    def kl(self) -> torch.Tensor:
        """KL(q || prior) of the item and group vectors, in closed form.

        For an item of group g: E_q(mu_g) KL(N(m, s^2) || N(mu_g, sigma_g^2))
        = log(sigma_g / s) + (s^2 + (m - m_g)^2 + s_g^2) / (2 sigma_g^2) - 1/2.
        """
        g = self.item_group
        s_item = F.softplus(self.item_rho)
        s_group = F.softplus(self.group_rho)
        sigma = (F.softplus(self.group_scale_raw) + 1e-2)[g].unsqueeze(-1)
        kl_items = (torch.log(sigma / s_item)
                    + (s_item**2 + (self.item_mean - self.group_mean[g]) ** 2 + s_group[g] ** 2) / (2 * sigma**2)
                    - 0.5)
        p = self.prior_group_scale
        kl_groups = math.log(p) - torch.log(s_group) + (s_group**2 + self.group_mean**2) / (2 * p * p) - 0.5
        return kl_items.sum() + kl_groups.sum()

    def negative_elbo(self, batch: dict[str, torch.Tensor], n_windows: int,
                      generator: torch.Generator) -> torch.Tensor:
        """-ELBO of the whole data set estimated from a minibatch of windows, per observed step."""
        ll = self.log_likelihood(batch["click"], batch["click_idx"], batch["slate"], generator)
        b = len(batch["click"])
        steps = max(float((batch["click"] != PAD).sum()) * n_windows / b, 1.0)
        return (-(n_windows / b) * ll.sum() + self.kl()) / steps

    # ------------------------------------------------------------------ training

    def fit(self, data: SlateInteractions, steps: int, generator: torch.Generator, batch_size: int = 32,
            lr: float = 0.02) -> list[float]:
        """Stochastic variational inference on `data`; returns the loss of every step.

        The optimizer persists across calls so that online refits continue where they left off.
        """
        if data.slate.shape[2] > self.width:
            raise ConfigError(f"data slates have {data.slate.shape[2]} slots, the model was built for "
                              f"width={self.width}")
        if data.n_items > self.n_items:
            raise ConfigError(f"data indexes items up to {data.n_items - 1}, the model has {self.n_items} items")
        pad = self.width - data.slate.shape[2]
        tensors = {
            "click": torch.as_tensor(data.click),
            "click_idx": torch.as_tensor(data.click_idx),
            "slate": F.pad(torch.as_tensor(data.slate), (0, pad)),
        }
        keep = torch.as_tensor(data.observed.any(axis=1))
        tensors = {k: v[keep] for k, v in tensors.items()}
        n = len(tensors["click"])
        if n == 0:
            return []
        if self._optimizer is None or self._lr != lr:
            self._optimizer = torch.optim.Adam(self.parameters(), lr=lr)
            self._lr = lr
        self.train()
        losses = []
        for _ in range(steps):
            rows = torch.randint(n, (min(batch_size, n),), generator=generator)
            loss = self.negative_elbo({k: v[rows] for k, v in tensors.items()}, n, generator)
            self._optimizer.zero_grad()
            loss.backward()
            self._optimizer.step()
            losses.append(float(loss.detach()))
        self.eval()
        return losses

    @torch.no_grad()
    def mean_log_likelihood(self, data: SlateInteractions) -> float:
        """Average log-likelihood per observed step under the posterior mean."""
        ll = self.log_likelihood(torch.as_tensor(data.click), torch.as_tensor(data.click_idx),
                                 F.pad(torch.as_tensor(data.slate), (0, self.width - data.slate.shape[2])))
        return float(ll.sum() / max(int(data.observed.sum()), 1))

    # ------------------------------------------------------------------ scoring

    @torch.no_grad()
    def candidate_scores(self, history: np.ndarray, candidates: np.ndarray,
                         generator: torch.Generator | None = None, draws: int = 1) -> np.ndarray:
        """(draws, C) scores s(z, v) of `candidates` after the clicks `history` (item indices).

        Without a generator: one row under the posterior mean. With one: each row is a joint
        posterior draw of every item involved, the history's included, so z moves with the draw.
        """
        hist = torch.as_tensor(np.asarray(history, dtype=np.int64))
        cand = torch.as_tensor(np.asarray(candidates, dtype=np.int64))
        vecs = self.vectors(torch.cat([hist, cand]), generator, draws)
        vecs = vecs.unsqueeze(0) if generator is None else vecs
        inputs = torch.cat([torch.zeros_like(vecs[:, :1]), vecs[:, : len(hist)]], dim=1)
        z = self.gru(inputs)[0][:, -1]
        v = vecs[:, len(hist) :]
        return similarity(z.unsqueeze(1), v, self.score).numpy().astype(np.float64)


class SlateTSRecommender(Recommender):
    """The slate model behind the `Recommender` contract: greedy, TS or in-slate TS.

    Catalog item i is model item i + 3 (0..2 are reserved, as in FINN.no data). Every
    episode's feedback goes to a buffer; with `learn_online` the posterior is refitted on
    it every `refit_every` turns, across users.
    """

    name = "slate-ts"

    def __init__(self, slate_size: int, catalog: Catalog, config: SlateTSConfig | dict[str, Any] | None = None,
                 seed: int | None = None, **overrides: Any) -> None:
        super().__init__(slate_size, seed)
        self.config = cfg = build(SlateTSConfig, "slate TS config", config, **overrides)
        self.catalog = catalog
        groups = (catalog.subtopic if cfg.groups == "subtopic" else catalog.topic).astype(np.int64)
        reserved = np.full(ITEM_OFFSET, int(groups.max()) + 1)
        self.model = SlateGRUModel(np.concatenate([reserved, groups]), slate_size + 1, cfg.item_dim, cfg.score,
                                   cfg.prior_group_scale, cfg.init_scale, seed)
        self.model.eval()
        self._fit_gen = torch_generator(seed)
        self._act_gen = torch_generator(seed)
        self.episodes: list[list[Event]] = []
        self._turns = 0
        self.losses: list[float] = []

    def begin_episode(self, seed: int | None = None) -> None:
        super().begin_episode(seed)
        if seed is not None:
            self._act_gen = torch_generator(seed)
        if not self.episodes or self.episodes[-1]:
            self.episodes.append([])
        del self.episodes[: -self.config.buffer_episodes]

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        if not self.episodes:
            self.begin_episode()
        cfg = self.config
        events = self.episodes[-1]
        recent = events[max(0, len(events) - (cfg.max_steps - 1)) :]
        history = np.array([click for _, click, _ in recent], dtype=np.int64)
        candidates = observation["candidate_ids"] + ITEM_OFFSET
        if cfg.policy == "greedy":
            return self.top_k(self.model.candidate_scores(history, candidates)[0], observation)
        draws = 1 if cfg.policy == "ts" else self.slate_size
        scores = self.model.candidate_scores(history, candidates, self._act_gen, draws)
        if cfg.policy == "ts":
            return self.top_k(scores[0], observation)
        rankings = np.stack([self.top_k(s, observation) for s in scores])
        return inslate_fill(rankings, self.slate_size, cfg.inslate_rule)

    def observe(self, reactions: np.ndarray, info: dict[str, Any]) -> None:
        if not self.episodes:
            self.begin_episode()
        self.episodes[-1].extend(turn_events(np.asarray(info["slate"]), np.asarray(reactions)))
        self._turns += 1
        if self.config.learn_online and self._turns % self.config.refit_every == 0:
            self.refit()

    def buffer(self) -> SlateInteractions:
        """The buffered episodes in FINN format, in windows of `max_steps` steps."""
        return pack_events([e for e in self.episodes if e], self.slate_size + 1, self.config.max_steps)

    def refit(self, steps: int | None = None) -> None:
        """Continue fitting the posterior on the buffered episodes."""
        data = self.buffer()
        if len(data):
            self.fit(data, steps or self.config.refit_steps)

    def fit(self, data: SlateInteractions, steps: int) -> list[float]:
        cfg = self.config
        losses = self.model.fit(data, steps, self._fit_gen, cfg.batch_size, cfg.lr)
        self.losses.extend(losses)
        return losses

    def fit_trajectories(self, trajectories: pd.DataFrame, steps: int) -> list[float]:
        """Fit offline on logged trajectories (`recoworld.evaluation.simulation` Parquet, read into a DataFrame)."""
        return self.fit(from_trajectories(trajectories, self.config.max_steps), steps)

    # ------------------------------------------------------------------ persistence

    def _identity(self) -> dict[str, Any]:
        cfg = self.config
        return {"slate_size": self.slate_size, "n_items": self.model.n_items, "item_dim": cfg.item_dim,
                "score": cfg.score, "groups": cfg.groups}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """The posterior and global parameters (not the optimizer state nor the episode buffer)."""
        return save_checkpoint(path, self.name, {**self._identity(), "config": self.config.model_dump()},
                               self.model.state_dict())

    def load(self, path: str | os.PathLike[str]) -> SlateTSRecommender:
        """Restore a saved posterior into this agent (its own policy and training settings stay)."""
        config, state = load_checkpoint(path, self.name)
        for key, mine in self._identity().items():
            if config.get(key) != mine:
                raise ConfigError(f"{path}: checkpoint has {key}={config.get(key)!r}, this agent has {mine!r}")
        self.model.load_state_dict(state)
        self.model._optimizer = None
        return self
