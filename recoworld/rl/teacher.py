"""Privileged-teacher pretraining: DAgger from the `oracle` into the PPO policy's candidate scorer.

Why: what brings a user back is the satisfaction a session ends on, and that follows the
relevance of every item shown (mostly skipped ones) to interests that drift, and the fatigue
near-duplicates add (recoworld/rl/training.py, "What made PPO learn"). A per-turn engagement
reward says little about it: about 4% of impressions are clicked, and the session-end return
terms arrive once per session as a draw from a heavy-tailed gap. From those rewards alone
PPO closed 14% of the random-to-oracle gap in 80k env steps. In simulation, though, the
hidden state is there to learn from: the `oracle` (recoworld/agents/oracle.py) reads it and
ranks by the expected satisfaction gain. Here it is only a *teacher at training time*, as in
teacher-student training for robots ("learning by cheating", Chen et al., CoRL 2019): the
student is the PPO module itself, which sees only the deployable `UserRelativeObservation`
features, and learns from the oracle's slates the best ranking those features allow.

How (DAgger, Ross et al., AISTATS 2011): round 0 lets the oracle play fresh training users
and records, for every turn, the features the policy would have seen and the oracle's slate;
later rounds let the *student* play and still record the oracle's slate for the states the
student reaches, so it learns to recover from its own mistakes. After each round the scorer
is refit on everything gathered, with one cross-entropy per slot, each over the candidates
not already taken by the oracle's earlier slots (the order `distinct_slate` decodes in). PPO
then starts from that policy. Only the scorer is fit; the value head starts as PPO's does.

The training users are drawn from the training population with seeds derived from the
training seed, never the evaluation seed, and the teacher is the same `oracle` the evaluation
reports as the headroom reference. The deployed policy reads no hidden state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from recoworld import seeding
from recoworld.agents import AgentFactory
from recoworld.agents.base import Observation
from recoworld.agents.oracle import OracleRecommender
from recoworld.catalog import Catalog
from recoworld.config import StrictModel
from recoworld.rl.features import slate_action_mask
from recoworld.rl.policy import RLlibRecommender, slate_action_space, takes_action_mask

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule
    from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule


class TeacherSettings(StrictModel):
    """DAgger from the oracle before PPO (see the module docstring); `rounds: 0` turns it off."""

    rounds: int = Field(0, ge=0, description="DAgger rounds: the oracle plays round 0, the student the rest")
    users: int = Field(200, ge=1, description="fresh training users per round, each for one whole episode")
    epochs: int = Field(30, ge=1, description="passes over all the data gathered so far, after each round")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate of the scorer's fit")
    minibatch_size: int = Field(256, ge=1)


class DaggerRecorder(RLlibRecommender):
    """Plays as the student policy (or, in round 0, as the oracle) and records, for every turn
    whose `info` holds the mindset, the student's features, the candidate mask and the oracle's slate."""

    name = "dagger"

    def __init__(self, module: RLModule, catalog: Catalog, slate_size: int, seed: int | None,
                 teacher_plays: bool) -> None:
        super().__init__(module, slate_size, seed)
        self.oracle = OracleRecommender(slate_size, catalog, seed)  # the `oracle` of the evaluation
        self.teacher_plays = teacher_plays
        self.features: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.slates: list[np.ndarray] = []

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        slate = super().act(observation, info)  # also folds the last turn into the episode profile
        mindset = info.get("mindset")
        if not mindset:  # the first turn of an episode: its reset info carries no mindset
            return slate
        teacher = self.oracle.rank(observation, mindset)
        assert self.last_features is not None
        self.features.append(self.last_features[0])
        self.masks.append(observation["candidate_mask"].astype(bool))
        self.slates.append(teacher)
        return teacher if self.teacher_plays else slate


def slate_imitation_loss(slot_logits: torch.Tensor, slates: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean over examples of the summed cross-entropies of each slot's logits (B, K, C) against the
    teacher's pick `slates[:, k]`, over the candidates still allowed: available (`masks`, (B, C))
    and not taken by the teacher's earlier slots.

    A slot whose pick is not available (the oracle shows a consumed item only once the available
    ones are used up) is left out: the masked policy gives such items no probability, and which
    consumed item fills a slot is the env's affair."""
    import torch

    allowed = masks.clone()
    rows = torch.arange(len(slates))
    loss = slot_logits.new_zeros(())
    for k in range(slates.shape[1]):
        pick = slates[:, k]
        counted = masks[rows, pick]
        logits = slot_logits[:, k].masked_fill(~allowed, torch.finfo(slot_logits.dtype).min)
        per_row = torch.nn.functional.cross_entropy(logits, torch.where(counted, pick, 0), reduction="none")
        loss = loss + torch.where(counted, per_row, 0.0).sum() / len(slates)
        allowed[rows, pick] = False
    return loss


def fit_scorer(module: TorchRLModule, features: np.ndarray, masks: np.ndarray, slates: np.ndarray,
               settings: TeacherSettings, seed: int) -> float:
    """Fit `module`'s policy logits to the teacher's slates; returns the last epoch's mean loss."""
    import torch
    from ray.rllib.core.columns import Columns

    obs, m, y = _module_obs(module, features, masks), torch.from_numpy(masks), torch.from_numpy(slates)
    k, c = slates.shape[1], masks.shape[1]
    optimizer = torch.optim.Adam(module.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(seed)
    last = float("nan")
    for _ in range(settings.epochs):
        order, total = torch.randperm(len(y), generator=generator), 0.0
        for start in range(0, len(y), settings.minibatch_size):
            at = order[start:start + settings.minibatch_size]
            batch = {key: value[at] for key, value in obs.items()} if isinstance(obs, dict) else obs[at]
            logits = module.forward_train({Columns.OBS: batch})[Columns.ACTION_DIST_INPUTS].reshape(-1, k, c)
            loss = slate_imitation_loss(logits, y[at], m[at])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(at)
        last = total / len(y)
    return last


def dagger(module: TorchRLModule, settings: TeacherSettings, seed: int,
           play: Callable[[dict[str, AgentFactory], int, int], Any],
           log: Callable[[str], None] = print) -> pd.DataFrame:
    """Run `settings.rounds` DAgger rounds on `module` in place; one row per round.

    `play(agents, n_users, seed)` plays each agent on `n_users` fresh training users drawn with
    `seed`, in a world that exposes the mindset (evaluation.py's `play`). The scorer is the one
    trained: only the policy's logits enter the loss, so the value head is left as it was.
    """
    import pandas as pd

    rows, features, masks, slates = [], [], [], []
    seeds = seeding.stream(seed, seeding.DAGGER).generate_state(settings.rounds)
    recorders: list[DaggerRecorder] = []
    teacher_plays = True

    def build(catalog: Catalog, k: int, agent_seed: int | None) -> DaggerRecorder:
        recorders.append(DaggerRecorder(module, catalog, k, agent_seed, teacher_plays))
        return recorders[-1]

    for round_, round_seed in enumerate(seeds.tolist()):
        teacher_plays = round_ == 0
        recorders.clear()
        play({"dagger": build}, settings.users, int(round_seed))
        for recorder in recorders:
            features += recorder.features
            masks += recorder.masks
            slates += recorder.slates
        if not slates:
            raise RuntimeError("DAgger gathered no turns: the world exposed no mindset to the oracle")
        x, m, y = np.stack(features), np.stack(masks), np.stack(slates).astype(np.int64)
        agreement = _agreement(module, x, m, y)
        module.train()
        loss = fit_scorer(module, x, m, y, settings, int(round_seed))
        module.eval()
        rows.append({"round": round_, "player": "oracle" if round_ == 0 else "student", "turns": len(y),
                     "agreement_before": agreement, "loss": loss})
        log(f"teacher round {round_} of {settings.rounds} done: {len(y)} turns gathered so far, the student agreed "
            f"with the oracle's first slot on {agreement:.0%} of them before this fit, loss after {loss:.3f}")
    return pd.DataFrame(rows)


def _agreement(module: RLModule, features: np.ndarray, masks: np.ndarray, slates: np.ndarray) -> float:
    """Share of turns on which the module's best available candidate is the oracle's first pick."""
    import torch
    from ray.rllib.core.columns import Columns

    obs = _module_obs(module, features, masks)
    with torch.no_grad():
        logits = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS].numpy()
    first = logits.reshape(slates.shape[0], slates.shape[1], -1)[:, 0]
    first = np.where(masks | ~masks.any(axis=1, keepdims=True), first, -np.inf)
    return float((first.argmax(axis=1) == slates[:, 0]).mean())


def _module_obs(module: RLModule, features: np.ndarray, masks: np.ndarray) -> Any:
    """The module's observation for a batch of features and (B, C) candidate masks, built once
    for all the turns gathered: with the per-slot action mask when the module takes one."""
    import torch

    if takes_action_mask(module):
        slate_size = len(slate_action_space(module).nvec)
        return {"observations": torch.from_numpy(features),
                "action_mask": torch.from_numpy(slate_action_mask(masks, slate_size))}
    return torch.from_numpy(features)
