"""A trained RLlib policy behind the `Recommender` contract, so any study can compare it.

`RLlibRecommender.from_checkpoint(path)` accepts an RLlib algorithm checkpoint (the folder
`Algorithm.save_to_path` wrote), the module folder inside it, or a `recoworld train` output
folder (its newest checkpoint). It applies the same `user_relative_features` the policy
trained on, with the same `EpisodeProfile` (forgotten at `begin_episode`, fed with the items
reviewed in each turn, whose count `observe` gets and whose rows the next observation's
history holds, and, for a policy trained on the `intent` features, the structured intent `observe`
gets in `info`), then decodes the slot logits into a slate of *distinct* candidates: slot by
slot, the best-scoring candidate not yet in the slate, available ones first. Where the
per-slot argmax has no repeats this is exactly the deterministic PPO action; otherwise it
fixes the repeats by the policy's own preferences instead of the env's retrieval order.
With `sample=True` each slot instead draws from the policy's own softmax over the candidates
still allowed (the stochastic policy PPO trained, without repeats), from the recommender's
seeded generator, so an evaluation stays reproducible.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

from recoworld.agents.base import Observation, Recommender
from recoworld.catalog import Catalog
from recoworld.catalog.features import FeatureLayout
from recoworld.errors import ConfigError
from recoworld.rl.features import (
    INTENT,
    EpisodeProfile,
    feature_set_of,
    reviewed_count,
    slate_action_mask,
    user_relative_features,
)

if TYPE_CHECKING:
    from ray.rllib.core.rl_module.rl_module import RLModule

#: Where `Algorithm.save_to_path` puts the single-agent module.
MODULE_SUBDIR = Path("learner_group/learner/rl_module/default_policy")


class RLlibRecommender(Recommender):
    """Acts with an RLlib `RLModule` trained on `UserRelativeObservation` features.

    Args:
        module: the policy; masked (Dict observation with `action_mask`) or plain (Box).
        slate_size: must match the policy's `MultiDiscrete` action length.
        seed: seeds the sampling decode (unused by the greedy one).
        sample: draw each slot from the policy's distribution instead of taking its argmax.
        catalog: the platform's catalog, which a policy trained on the `intent` features reads the candidates'
            topics from; evaluation hands it over (`use_catalog`) where the constructor did not get it.
    """

    name = "rllib"

    def __init__(self, module: RLModule, slate_size: int, seed: int | None = None, sample: bool = False,
                 catalog: Catalog | None = None) -> None:
        super().__init__(slate_size, seed)
        self.sample = sample
        self.catalog = catalog
        import torch

        self._torch = torch
        self.module = module
        nvec = np.asarray(slate_action_space(module).nvec)
        if len(nvec) != slate_size:
            raise ConfigError(f"the policy shows slates of {len(nvec)} items, but slate_size={slate_size}")
        self.n_candidates = int(nvec[0])
        self.masked = takes_action_mask(module)
        space = module.observation_space
        features = space["observations"] if isinstance(space, spaces.Dict) else space
        if not isinstance(features, spaces.Box):
            raise ConfigError(f"the policy's observation space is {space}, not UserRelativeObservation's features")
        self.feature_set = feature_set_of(int(features.shape[0]), self.n_candidates)  # the layout it trained on
        self.profile: EpisodeProfile | None = None  # built at the first observation (its embedding width)
        self._reviewed = 0  # items reviewed in the last turn, folded into the profile at the next `act`
        self._intent: dict[str, Any] | None = None  # the intent given in the last turn, likewise
        self.last_features: np.ndarray | None = None

    def use_catalog(self, catalog: Catalog) -> None:
        """The catalog of the world the policy plays in (see `catalog`), before its first episode."""
        self.catalog = catalog
        self.profile = None  # rebuilt at the next observation, with it

    def begin_episode(self, seed: int | None = None) -> None:
        super().begin_episode(seed)
        if self.profile is not None:
            self.profile.reset()
        self._reviewed = 0
        self._intent = None

    def observe(self, reactions: np.ndarray, info: dict[str, Any]) -> None:
        self._reviewed = int(reviewed_count(reactions))
        self._intent = info.get("instruction_intent")

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], slate_size: int, seed: int | None = None, sample: bool = False,
        catalog: Catalog | None = None,
    ) -> RLlibRecommender:
        module_path = resolve_module_path(path)
        from ray.rllib.core.rl_module.rl_module import RLModule

        return cls(RLModule.from_checkpoint(str(module_path)), slate_size, seed, sample, catalog)

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        from ray.rllib.core.columns import Columns

        c = len(observation["candidate_ids"])
        if c != self.n_candidates:
            raise ConfigError(f"the policy was trained on n_candidates={self.n_candidates}, the env offers {c}")
        torch = self._torch
        batched = {key: np.asarray(value)[None] for key, value in observation.items()}
        if self.profile is None:
            width = batched["candidate_features"].shape[-1]
            if self.feature_set == INTENT and self.catalog is None:
                raise ConfigError("this policy was trained on the intent features, which read the candidates' "
                                  "topics: build RLlibRecommender with the world's catalog (catalog=)")
            self.profile = EpisodeProfile(1, FeatureLayout.from_width(width).embedding_dim,
                                          catalog=self.catalog if self.feature_set == INTENT else None)
        self.profile.update(batched, np.array([self._reviewed]), intents=[self._intent])
        self._reviewed, self._intent = 0, None
        # (1, n): what the policy saw
        self.last_features = user_relative_features(self.profile.augment(batched), self.feature_set)
        features = torch.from_numpy(self.last_features)
        mask = observation["candidate_mask"]
        obs: Any = features
        if self.masked:
            obs = {"observations": features,
                   "action_mask": torch.from_numpy(slate_action_mask(mask, self.slate_size))[None]}
        with torch.no_grad():
            out = self.module.forward_inference({Columns.OBS: obs})
        logits = out[Columns.ACTION_DIST_INPUTS][0].numpy().reshape(self.slate_size, c)
        return distinct_slate(logits, mask.astype(bool), self.rng if self.sample else None)


def takes_action_mask(module: RLModule) -> bool:
    """Whether the module's observation is `Dict(action_mask, observations)` rather than the features alone."""
    space = module.observation_space
    return isinstance(space, spaces.Dict) and "action_mask" in space.spaces


def slate_action_space(module: RLModule) -> spaces.MultiDiscrete:
    """The module's slate action space, `MultiDiscrete([C] * K)`; one clear error for any other."""
    space = module.action_space
    if not isinstance(space, spaces.MultiDiscrete):
        raise ConfigError(f"the policy's action space is {space}, not a MultiDiscrete slate of candidate indices")
    return space


def distinct_slate(slot_logits: np.ndarray, available: np.ndarray,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Slot k takes its best-scoring candidate not already shown, preferring available ones; with
    `rng`, a draw from the softmax of its logits over those candidates instead."""
    k, c = slot_logits.shape
    chosen = np.zeros(c, dtype=bool)
    slate = np.empty(k, dtype=np.int64)
    for slot in range(k):
        allowed = ~chosen & available if (~chosen & available).any() else ~chosen
        scores = np.where(allowed, slot_logits[slot].astype(np.float64), -np.inf)
        if rng is None:
            pick = int(np.argmax(scores))
        else:
            p = np.exp(scores - scores.max())
            pick = int(rng.choice(c, p=p / p.sum()))
        slate[slot] = pick
        chosen[pick] = True
    return slate


def resolve_module_path(path: str | os.PathLike[str]) -> Path:
    """The module folder for an algorithm checkpoint, a module folder or a training output folder, absolute:
    RLlib restores from a URI, and a relative path has no scheme (`rllib:runs/ppo` from the current folder)."""
    path = Path(path).resolve()
    if (path / MODULE_SUBDIR).is_dir():
        return path / MODULE_SUBDIR
    if any(path.glob("module_state.*")):
        return path
    checkpoints = sorted((path / "checkpoints").glob("iter_*")) if (path / "checkpoints").is_dir() else []
    if checkpoints:
        return checkpoints[-1] / MODULE_SUBDIR
    raise ConfigError(
        f"no RLlib policy at {str(path)!r}: expected an algorithm checkpoint (with {MODULE_SUBDIR}/), "
        "a module checkpoint, or a `recoworld train` output folder (with checkpoints/iter_*/)"
    )
