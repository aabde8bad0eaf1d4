"""The parametric choice model: how one reviewed item turns into a reaction.

The click logit combines relevance to current interests, quality, popularity scaled by the
user's conformity, the gap between the item's novelty and the user's appetite for novelty,
fatigue, position and a per-user activity offset. Like and
share are further thresholds on the same logit, so reactions are ordinal. Noise comes
in pre-drawn, which keeps the per-position loop to a few array operations.
"""

from __future__ import annotations

import functools

import numpy as np

from recoworld.config import ChoiceConfig


@functools.cache
def _position_penalty(weight: float, k: int) -> np.ndarray:
    return weight * np.log1p(np.arange(k))


class ChoiceModel:
    """Vectorized: arguments broadcast, e.g. (B, K) arrays for a whole slate."""

    def __init__(self, config: ChoiceConfig) -> None:
        self.config = config

    def utility(
        self,
        relevance: np.ndarray | float,
        quality: np.ndarray,
        novelty: np.ndarray,
        novelty_propensity: np.ndarray,
        fatigue: np.ndarray,
        position: np.ndarray | int,
        popularity: np.ndarray | float = 0.0,
        conformity: np.ndarray | float = 1.0,
        activity: np.ndarray | float = 0.0,
        duration: np.ndarray | float = 0.0,
    ) -> np.ndarray:
        """`popularity`: the items' standardized log popularity; `conformity`, `activity`: per user;
        `duration`: the items' minutes (weighed by `config.duration` on a log scale, when non-zero)."""
        c = self.config
        u = (
            c.bias
            + activity
            + c.relevance * relevance
            + c.quality * quality
            - c.novelty_mismatch * np.abs(novelty - novelty_propensity)
            - c.fatigue * fatigue
            - self.position_penalty(position)
        )
        if c.duration:
            u = u - c.duration * np.log1p(duration)
        return u + c.popularity * conformity * popularity if c.popularity else u

    def position_penalty(self, position: np.ndarray | int) -> np.ndarray | float:
        """Position bias: attention decays with the log of the slot index (a table lookup for arrays)."""
        if isinstance(position, np.ndarray):
            return _position_penalty(self.config.position, int(position.max()) + 1)[position]
        return self.config.position * float(np.log1p(position))

    def react(self, utility: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Reaction level (0 skip .. 3 share) from logistic `noise` of shape utility.shape + (3,)."""
        return self.engagement(utility + noise[..., 0] > 0, utility, noise[..., 1:])

    def engagement(self, click: np.ndarray, utility: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Reaction level given the click decisions; `noise[..., 0]` drives likes, `[..., 1]` shares."""
        c = self.config
        like = click & (utility + noise[..., 0] > c.like_threshold)
        share = like & (utility + noise[..., 1] > c.share_threshold)
        return click.astype(np.int8) + like + share

    @staticmethod
    def draw_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Standard logistic noise: `u + noise > 0` happens with probability sigmoid(u)."""
        p = rng.random(shape)
        return np.log(p) - np.log1p(-p)
