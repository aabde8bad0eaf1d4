"""A hierarchical novelty-seeking recommender, and its flat single-level ablation.

After Li, Wang, Chi & Chen, "Hierarchical Reinforcement Learning for Modeling User
Novelty-Seeking Intent in Recommender Systems" (2023).

## High level (hierarchical only)
At each session start, and every `goal_every` turns if set, it picks a novelty goal g
from `goals`. Its state is what a platform can estimate about the user: the static
trait from the whole episode so far (how novel the clicked items were, against what
was shown, and how click rates differ between novel and familiar items) and the
session context (last session's click rate, days since the last session, session
count). It is a softmax policy trained by REINFORCE with a learned linear baseline on
the return of its segment: engagement plus, at session end, the return term of
`RewardConfig` (`return_bonus * exp(-gap / return_tau_days)`, or `churn_penalty`).

## Low level
Builds the slate slot by slot as a Plackett-Luce policy over the candidates. Per
candidate it sees relevance (the greedy baseline's taste score), quality, popularity,
diversity (1 - max similarity to the items already in the slate) and novelty
(1 - max similarity to the user's recent history and the slate so far). The
hierarchical low level also sees the goal mismatch -|novelty - g|; it is rewarded each
turn with engagement + `diversity_weight` * slate diversity - `goal_weight` * |mean
novelty of the reviewed items - g|. REINFORCE with a batch-mean baseline.

## Flat ablation (`hierarchical=False`)
The same low level without a goal: novelty enters as novelty and novelty^2, so it can
learn any single preferred novelty level but not one per user or per session. It is
trained on the discounted in-session return of the env reward (engagement, return term)
plus the same diversity term.

Both learn online in `observe` (across users) unless `learn_online=False`; with
`explore=False` they act greedily (argmax goal, argmax slot by slot).

After each `act`, `last_trace` holds the decision for analysis: the novelty goal in force
(None in the flat ablation) and each slot's novelty as the low level saw it when picking.
`simulate` and studies log it in the trajectory's `agent_trace` column.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from recoworld.agents.base import Observation, Recommender
from recoworld.agents.baselines import GreedyRelevanceRecommender
from recoworld.agents.torch_utils import load_checkpoint, save_checkpoint, torch_generator
from recoworld.catalog import Catalog, FeatureLayout, scalar_feature, slate_diversity
from recoworld.config import RewardConfig, StrictModel, build
from recoworld.errors import ConfigError

#: Low-level features: relevance, quality, popularity, diversity, novelty, then the goal or flat term.
LOW_FEATURES = ("relevance", "quality", "popularity", "diversity", "novelty", "goal_match | novelty^2")
#: High-level state, centred and scaled to about [-1, 1] so that a linear policy separates users quickly.
HIGH_FEATURES = ("bias", "clicked_minus_shown_novelty", "novel_minus_familiar_ctr", "last_session_ctr",
                 "log_gap_days", "session_count")
_TRAIT_SCALE = 4.0


class NoveltyPolicyConfig(StrictModel):
    """Settings of `NoveltyRecommender` (hierarchical or flat)."""

    hierarchical: bool = True
    goals: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    goal_every: int = Field(0, ge=0, description="turns between goal updates within a session; 0 = session start only")
    learn_online: bool = True
    explore: bool = Field(True, description="sample actions; False acts greedily")
    lr_low: float = Field(0.05, gt=0)
    lr_high: float = Field(0.05, gt=0)
    low_batch: int = Field(64, ge=2, description="turns per low-level update")
    high_batch: int = Field(64, ge=2, description="goal decisions per high-level update")
    diversity_weight: float = Field(0.5, ge=0)
    goal_weight: float = Field(10.0, ge=0, description="intrinsic reward for meeting the goal (hierarchical); "
                               "smaller values let per-turn engagement drown the goal signal")
    gamma: float = Field(0.9, ge=0, le=1, description="discount of the flat policy's in-session return")
    prior_count: float = Field(3.0, gt=0, description="pseudo-observations shrinking the trait estimates to 0.5")
    reward: RewardConfig = RewardConfig()

    @field_validator("goals")
    @classmethod
    def _goals(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not 0 <= g <= 1 for g in value):
            raise ValueError(f"goals must be a non-empty tuple of novelty levels in [0, 1], got {value}")
        return value


@dataclass
class _Turn:
    """What the low level needs to replay a slate's log-probability: per-slot features and picks."""

    features: np.ndarray  # (K, C, F)
    allowed: np.ndarray  # (K, C) bool
    picks: np.ndarray  # (K,)
    novelty: np.ndarray  # (K,) novelty of each pick at its slot
    reward: float = 0.0


@dataclass
class _Segment:
    """One high-level decision and the turns it governed."""

    state: np.ndarray
    goal: int
    turns: list[_Turn] = field(default_factory=list)
    ret: float = 0.0


class NoveltyRecommender(Recommender):
    """Hierarchical (goal-setting + slate-building) novelty policy, or its flat ablation."""

    name = "hrl-novelty"

    def __init__(self, slate_size: int, catalog: Catalog, config: NoveltyPolicyConfig | dict[str, Any] | None = None,
                 seed: int | None = None, **overrides: Any) -> None:
        super().__init__(slate_size, seed)
        self.config = cfg = build(NoveltyPolicyConfig, "novelty policy config", config, **overrides)
        self.name = "hrl-novelty" if cfg.hierarchical else "flat-novelty"
        self.catalog = catalog
        self._relevance = GreedyRelevanceRecommender(slate_size)
        self._gen = torch_generator(seed)
        self.low = nn.Linear(len(LOW_FEATURES), 1, bias=False)
        self.high = nn.Linear(len(HIGH_FEATURES), len(cfg.goals), bias=False)
        self.value = nn.Linear(len(HIGH_FEATURES), 1, bias=False)
        with torch.no_grad():  # deterministic start: uniform goals, greedy relevance slates
            for layer in (self.low, self.high, self.value):
                layer.weight.zero_()
            self.low.weight[0, 0] = 1.0  # start from greedy relevance
        self._opt_low = torch.optim.Adam(self.low.parameters(), lr=cfg.lr_low)
        self._opt_high = torch.optim.Adam([*self.high.parameters(), *self.value.parameters()], lr=cfg.lr_high)
        self._ready_turns: list[_Turn] = []
        self._ready_segments: list[_Segment] = []
        self._reset_user()

    # ------------------------------------------------------------------ episode bookkeeping

    def _reset_user(self) -> None:
        self._segments: list[_Segment] = []  # of the open session
        self._segment: _Segment | None = None
        self._turns_in_segment = 0
        self._stats = np.zeros(6)  # clicked nov sum, clicks, shown nov sum, shown, clicks on novel, novel shown
        self._last_session_ctr = 0.5
        self._session_clicks = np.zeros(2)  # clicks, reviewed
        self.last_trace: dict[str, Any] | None = None

    def begin_episode(self, seed: int | None = None) -> None:
        super().begin_episode(seed)
        if seed is not None:
            self._gen = torch_generator(seed)
        self._reset_user()

    # ------------------------------------------------------------------ features

    def high_state(self, observation: Observation) -> np.ndarray:
        """Trait estimates from the episode so far (shrunk to 0.5) and the session context."""
        k0 = self.config.prior_count
        s = self._stats
        clicked_nov = (s[0] + 0.5 * k0) / (s[1] + k0)
        shown_nov = (s[2] + 0.5 * k0) / (s[3] + k0)
        ctr_novel = (s[4] + 0.5 * k0) / (s[5] + k0)
        ctr_familiar = (s[1] - s[4] + 0.5 * k0) / (s[3] - s[5] + k0)
        ctx = observation["context"]
        return np.array([1.0, _TRAIT_SCALE * (clicked_nov - shown_nov), _TRAIT_SCALE * (ctr_novel - ctr_familiar),
                         2.0 * (self._last_session_ctr - 0.5), np.log1p(float(ctx[3])) - 0.5,
                         min(float(ctx[1]), 30.0) / 15.0 - 1.0], dtype=np.float32)

    def _candidate_terms(self, observation: Observation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Static per-candidate features (relevance, quality, popularity), history novelty, embeddings."""
        feats = observation["candidate_features"].astype(np.float64)
        columns = FeatureLayout.from_width(feats.shape[1]).embedding
        emb = feats[:, columns]
        rel = self._relevance.scores(observation)
        if self._relevance.taste(observation) is None:
            rel = np.zeros_like(rel)
        valid = observation["history_ids"] >= 0
        if valid.any():
            hist = observation["history_features"][valid, columns].astype(np.float64)
            novelty = 1.0 - np.minimum((emb @ hist.T).max(axis=1), 1.0)
        else:
            novelty = np.ones(len(emb))
        static = np.stack([rel, scalar_feature(feats, "quality"), scalar_feature(feats, "log_popularity")], axis=1)
        return static, novelty, emb

    def _slot_features(self, static: np.ndarray, novelty: np.ndarray, max_sim: np.ndarray,
                       goal: float | None) -> np.ndarray:
        diversity = 1.0 - np.maximum(max_sim, 0.0) if np.isfinite(max_sim).all() else np.ones(len(novelty))
        eff = np.minimum(novelty, diversity)
        last = -np.abs(eff - goal) if goal is not None else eff**2
        return np.column_stack([static, diversity, eff, last]).astype(np.float32)

    # ------------------------------------------------------------------ acting

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        cfg = self.config
        new_segment = self._segment is None or (cfg.goal_every and self._turns_in_segment >= cfg.goal_every)
        if new_segment:
            self._open_segment(observation)
        assert self._segment is not None
        goal = cfg.goals[self._segment.goal] if cfg.hierarchical else None
        static, novelty, emb = self._candidate_terms(observation)
        c, k = len(novelty), self.slate_size
        allowed = observation["candidate_mask"].astype(bool).copy()
        if allowed.sum() < k:  # too few unconsumed candidates: let consumed ones fill the slate
            allowed[:] = True
        max_sim = np.full(c, -np.inf)
        feats = np.empty((k, c, len(LOW_FEATURES)), dtype=np.float32)
        allowed_at = np.empty((k, c), dtype=bool)
        picks = np.empty(k, dtype=np.int64)
        nov_at = np.empty(k)
        weights = self.low.weight.detach().numpy()[0].astype(np.float64)
        for slot in range(k):
            feats[slot] = self._slot_features(static, novelty, max_sim, goal)
            allowed_at[slot] = allowed
            logits = np.where(allowed, feats[slot] @ weights, -np.inf)
            if cfg.explore:
                probs = np.exp(logits - logits.max())
                pick = int(self.rng.choice(c, p=probs / probs.sum()))
            else:
                pick = int(np.argmax(logits))
            picks[slot] = pick
            nov_at[slot] = feats[slot, pick, 4]
            allowed[pick] = False
            max_sim = np.maximum(max_sim, emb @ emb[pick])
        self._segment.turns.append(_Turn(feats, allowed_at, picks, nov_at))
        self._turns_in_segment += 1
        self.last_trace = {"goal": goal, "novelty": nov_at.tolist()}
        return picks

    def _open_segment(self, observation: Observation) -> None:
        state = self.high_state(observation)
        goal = 0
        if self.config.hierarchical:
            with torch.no_grad():
                logits = self.high(torch.as_tensor(state))
            if self.config.explore:
                goal = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=self._gen))
            else:
                goal = int(torch.argmax(logits))
        self._segment = _Segment(state, goal)
        self._segments.append(self._segment)
        self._turns_in_segment = 0

    # ------------------------------------------------------------------ feedback and learning

    def observe(self, reactions: np.ndarray, info: dict[str, Any]) -> None:
        if self._segment is None or not self._segment.turns:
            return
        cfg = self.config
        turn = self._segment.turns[-1]
        reactions = np.asarray(reactions)
        seen, clicked = reactions >= 0, reactions >= 1
        novel = turn.novelty > 0.5
        self._stats += [turn.novelty[clicked].sum(), clicked.sum(), turn.novelty[seen].sum(), seen.sum(),
                        (clicked & novel).sum(), (seen & novel).sum()]
        self._session_clicks += [clicked.sum(), seen.sum()]
        engagement = float(info.get("engagement_reward", 0.0))
        diversity = slate_diversity(self.catalog, np.asarray(info["slate"]))
        session_end = 0.0
        if info.get("left"):
            gap = info.get("return_gap_days")
            rc = cfg.reward
            session_end = (rc.churn_penalty if gap is None
                           else rc.return_bonus * float(np.exp(-gap / rc.return_tau_days)))
        if cfg.hierarchical:
            goal = cfg.goals[self._segment.goal]
            mismatch = abs(float(turn.novelty[seen].mean()) - goal) if seen.any() else 0.0
            turn.reward = engagement + cfg.diversity_weight * diversity - cfg.goal_weight * mismatch
        else:
            turn.reward = engagement + session_end + cfg.diversity_weight * diversity
        self._segment.ret += engagement + session_end
        if info.get("left"):
            self._close_session()
        if info.get("episode_stats") is not None and not info.get("left"):
            self._segments, self._segment = [], None  # truncated mid-session: the open session has no return

    def _close_session(self) -> None:
        cfg = self.config
        segments = self._segments
        clicks, seen = self._session_clicks
        self._last_session_ctr = float(clicks / seen) if seen else 0.5
        self._session_clicks[:] = 0
        self._segments, self._segment = [], None
        if not cfg.learn_online:
            return
        turns = [t for s in segments for t in s.turns]
        if not cfg.hierarchical:  # discounted in-session return-to-go
            running = 0.0
            for t in reversed(turns):
                running = t.reward + cfg.gamma * running
                t.reward = running
        running = 0.0
        for s in reversed(segments):  # segment return includes what later segments of the session earn
            running += s.ret
            s.ret = running
        self._ready_turns.extend(turns)
        if len(self._ready_turns) >= cfg.low_batch:
            self.update_low(self._ready_turns)
            self._ready_turns = []
        if cfg.hierarchical:
            self._ready_segments.extend(segments)
            if len(self._ready_segments) >= cfg.high_batch:
                self.update_high(self._ready_segments)
                self._ready_segments = []

    def update_low(self, turns: list[_Turn]) -> float:
        """One REINFORCE step on the slate-building policy; returns the loss."""
        feats = torch.as_tensor(np.stack([t.features for t in turns]))  # (N, K, C, F)
        allowed = torch.as_tensor(np.stack([t.allowed for t in turns]))
        picks = torch.as_tensor(np.stack([t.picks for t in turns]))
        rewards = torch.as_tensor([t.reward for t in turns], dtype=torch.float32)
        adv = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
        logits = self.low(feats).squeeze(-1).masked_fill(~allowed, -1e9)
        logp = torch.log_softmax(logits, -1).gather(-1, picks.unsqueeze(-1)).squeeze(-1).sum(-1)
        loss = -(adv * logp).mean()
        self._opt_low.zero_grad()
        loss.backward()
        self._opt_low.step()
        return float(loss.detach())

    def update_high(self, segments: list[_Segment]) -> float:
        """One REINFORCE-with-baseline step on the goal policy and its value baseline."""
        states = torch.as_tensor(np.stack([s.state for s in segments]))
        goals = torch.as_tensor([s.goal for s in segments])
        returns = torch.as_tensor([s.ret for s in segments], dtype=torch.float32)
        value = self.value(states).squeeze(-1)
        adv = returns - value.detach()
        adv = adv / (adv.std() + 1e-6)
        logp = torch.log_softmax(self.high(states), -1).gather(-1, goals.unsqueeze(-1)).squeeze(-1)
        scale = returns.std() + 1e-6
        loss = -(adv * logp).mean() + (((returns - value) / scale) ** 2).mean()
        self._opt_high.zero_grad()
        loss.backward()
        self._opt_high.step()
        return float(loss.detach())

    def goal_probabilities(self, state: np.ndarray) -> np.ndarray:
        """The high level's distribution over `goals` in a given state (for inspection)."""
        with torch.no_grad():
            return torch.softmax(self.high(torch.as_tensor(state, dtype=torch.float32)), -1).numpy()

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Both levels' weights and the value baseline (not optimizer state)."""
        state = {"low": self.low.weight.detach().clone(), "high": self.high.weight.detach().clone(),
                 "value": self.value.weight.detach().clone()}
        return save_checkpoint(path, "novelty", {"slate_size": self.slate_size, "config": self.config.model_dump()},
                               state)

    def load(self, path: str | os.PathLike[str]) -> NoveltyRecommender:
        """Restore saved weights; the checkpoint must match this agent's hierarchy and goals."""
        config, state = load_checkpoint(path, "novelty")
        saved = config["config"]
        for key in ("hierarchical", "goals"):
            mine = getattr(self.config, key)
            theirs = tuple(saved[key]) if key == "goals" else saved[key]
            if theirs != mine:
                raise ConfigError(f"{path}: checkpoint has {key}={theirs!r}, this agent has {mine!r}")
        with torch.no_grad():
            self.low.weight.copy_(state["low"])
            self.high.weight.copy_(state["high"])
            self.value.weight.copy_(state["value"])
        return self
