"""`SlateScorerRLModule`: an RLlib PPO module that scores every candidate with one shared network.

A slate policy should not care in which retrieval position a candidate arrived. A flat MLP
over C concatenated candidate rows learns a separate scoring rule per position (and per
slot), which multiplies the samples it needs by about C. This module applies one small MLP to
each candidate's `UserRelativeObservation` row (concatenated with the global features) and
reads K outputs from it: candidate i's logit for slot k. The logits are those of the env's
`MultiDiscrete([C] * K)` action (slot-major), so PPO's MultiCategorical distribution is
unchanged. When the observation carries an `action_mask`, masked logits are pushed to
RLlib's FLOAT_MIN, as in `ActionMaskingTorchRLModule`. The value head sees the global
features and the mean and max of the candidate rows (permutation invariant as well), and,
when the observation carries `critic` (`HiddenStateForCritic`, training only), the user's
hidden state too; the policy head never reads it.

Use with `UserRelativeObservation` (either variant) and PPO:
`RLModuleSpec(module_class=SlateScorerRLModule, model_config={"hidden": [64, 64]})`.
"""

from __future__ import annotations

import itertools
from typing import Any

import gymnasium as gym
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDeterministic, TorchMultiCategorical
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.torch_utils import FLOAT_MIN
from torch import nn

from recoworld.rl.features import feature_set_of


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class DistinctSlate(TorchMultiCategorical):
    """A slate of K distinct candidates drawn slot by slot: slot k's categorical over its logits, with the
    candidates of slots 0..k-1 removed.

    Why: RLlib's MultiCategorical draws the K slots independently, so a policy sure of one candidate puts it in
    several slots; the env then replaces the repeats by the first unused candidate in retrieval order, which the
    policy never chose, while `RLlibRecommender` (evaluation) fills them by the policy's own preferences
    (`distinct_slate`). Drawing without replacement makes the trained slate the evaluated one, and its
    log-probability the slate's own. Its argmax (`to_deterministic`) is `distinct_slate`'s greedy decode. Entropy
    and KL are the independent slots' (what PPO logs and, with a KL penalty, pulls on): an approximation."""

    def __init__(self, categoricals: list[Any]) -> None:
        super().__init__(categoricals)
        self._logits = torch.stack([cat.logits for cat in categoricals], dim=-2)  # (..., K, C)

    def _pick(self, greedy: bool) -> torch.Tensor:
        logits = self._logits
        taken = torch.zeros_like(logits[..., 0, :], dtype=torch.bool)
        picks = []
        for k in range(logits.shape[-2]):
            scores = torch.where(taken, FLOAT_MIN, logits[..., k, :])
            pick = scores.argmax(dim=-1) if greedy else torch.distributions.Categorical(logits=scores).sample()
            picks.append(pick)
            taken = taken | nn.functional.one_hot(pick, logits.shape[-1]).bool()
        return torch.stack(picks, dim=-1)

    def sample(self, *, sample_shape: Any = None, return_logp: bool = False, **kwargs: Any) -> Any:
        drawn = self._pick(greedy=False)
        return (drawn, self.logp(drawn)) if return_logp else drawn

    def rsample(self, sample_shape: Any = ()) -> Any:  # type: ignore[override]  # RLlib's two bases disagree on it
        """A draw like `sample` (slates are discrete: no gradient flows through it either way)."""
        return self._pick(greedy=False)

    def logp(self, value: Any, **kwargs: Any) -> torch.Tensor:
        logits, value = self._logits, torch.as_tensor(value).long()
        taken = torch.zeros_like(logits[..., 0, :], dtype=torch.bool)
        total = torch.zeros_like(logits[..., 0, 0])
        for k in range(logits.shape[-2]):
            scores = torch.where(taken, FLOAT_MIN, logits[..., k, :])
            total = total + torch.log_softmax(scores, dim=-1).gather(-1, value[..., k : k + 1]).squeeze(-1)
            taken = taken | nn.functional.one_hot(value[..., k], logits.shape[-1]).bool()
        return total

    def to_deterministic(self) -> TorchDeterministic:
        return TorchDeterministic(loc=self._pick(greedy=True))


class SlateScorerRLModule(TorchRLModule, ValueFunctionAPI):
    """Shared per-candidate scorer (policy) and pooled value head; see the module docstring."""

    def setup(self) -> None:
        space = self.action_space
        if not isinstance(space, gym.spaces.MultiDiscrete) or len(set(space.nvec.tolist())) != 1:
            raise ValueError(f"SlateScorerRLModule needs a MultiDiscrete([C] * K) slate action, got {space}")
        self.n_candidates, self.slate_size = int(space.nvec[0]), len(space.nvec)
        obs_space = self.observation_space
        features = obs_space["observations"] if isinstance(obs_space, gym.spaces.Dict) else obs_space
        if features is None:
            raise ValueError("SlateScorerRLModule needs an observation space (UserRelativeObservation's features)")
        shape = features.shape or ()
        if len(shape) != 1:
            raise ValueError(f"SlateScorerRLModule expects a flat UserRelativeObservation vector, got {shape}")
        self.features = feature_set_of(int(shape[0]), self.n_candidates)  # which layout it was built for
        n_cand, n_glob = self.features.per_candidate, self.features.globals
        config = self.model_config or {}
        if not isinstance(config, dict):
            raise ValueError(f"SlateScorerRLModule takes a dict model_config ({{'hidden': [...]}}), got {config!r}")
        hidden = list(config.get("hidden", [64, 64]))
        critic = obs_space.spaces.get("critic") if isinstance(obs_space, gym.spaces.Dict) else None
        self.n_critic = int(critic.shape[0]) if critic is not None and critic.shape else 0
        self.scorer = _mlp([n_cand + n_glob, *hidden, self.slate_size])
        self.value_head = _mlp([2 * n_cand + n_glob + self.n_critic, *hidden, 1])
        dist = DistinctSlate if config.get("distinct_slate", False) else TorchMultiCategorical
        # RLlib declares this classmethod as a plain function of `parent_cls`, so mypy misreads the call.
        self.action_dist_cls = dist.get_partial_dist_cls(  # type: ignore[misc]
            space=space, input_lens=[self.n_candidates] * self.slate_size
        )

    def _split(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, C, F) candidate rows, (B, G) global features, and the (B, K * C) mask or None."""
        features, mask = (obs["observations"], obs.get("action_mask")) if isinstance(obs, dict) else (obs, None)
        c, f = self.n_candidates, self.features.per_candidate
        return features[:, : c * f].reshape(-1, c, f), features[:, c * f :], mask

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        cand, glob, mask = self._split(batch[Columns.OBS])
        b, c, _ = cand.shape
        rows = torch.cat([cand, glob[:, None, :].expand(b, c, glob.shape[1])], dim=-1)
        logits = self.scorer(rows).transpose(1, 2).reshape(b, self.slate_size * c)  # slot-major, like the action
        if mask is not None:
            logits = logits + torch.clamp(torch.log(mask), min=FLOAT_MIN)
        return {Columns.ACTION_DIST_INPUTS: logits}

    def compute_values(self, batch: dict[str, Any], embeddings: Any | None = None) -> torch.Tensor:
        obs = batch[Columns.OBS]
        cand, glob, _ = self._split(obs)
        parts = [cand.mean(dim=1), cand.max(dim=1).values, glob]
        if self.n_critic:
            parts.append(obs["critic"])
        pooled = torch.cat(parts, dim=-1)
        return self.value_head(pooled).squeeze(-1)
