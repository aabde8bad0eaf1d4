"""How long a user stays away after a session: the retention half of the user model.

The return time is Gamma-distributed with a daily rate that grows with end-of-session
satisfaction and with the user's return propensity, and a session can also end in
churn. So a recommender that leaves users unhappy sees longer gaps and more churn,
which is the signal a retention-aware agent has to learn from.
"""

from __future__ import annotations

import numpy as np

from recoworld.config import ReturnConfig
from recoworld.streams import UserStreams


class ReturnGapModel:
    def __init__(self, config: ReturnConfig) -> None:
        self.config = config

    def rate(self, satisfaction: np.ndarray, propensity: np.ndarray) -> np.ndarray:
        """Expected returns per day."""
        c = self.config
        relative = np.exp(c.satisfaction_effect * (satisfaction - c.satisfaction_reference))
        return c.base_rate * relative * (propensity / 0.5)

    def churn_probability(self, satisfaction: np.ndarray) -> np.ndarray:
        c = self.config
        return 1.0 / (1.0 + np.exp(-(c.churn_bias - c.churn_satisfaction * satisfaction)))

    def sample(
        self, satisfaction: np.ndarray, propensity: np.ndarray, streams: UserStreams, rows: np.ndarray,
        can_churn: np.ndarray | bool = True,
    ) -> np.ndarray:
        """Gap in days per user `rows[j]` (drawn from its stream); `inf` marks churn, which only
        users with `can_churn` may do."""
        satisfaction = np.asarray(satisfaction, dtype=np.float64)
        u_churn, base_gap = streams.churn_and_gap(rows, self.config.gap_shape)
        gap = base_gap / self.rate(satisfaction, np.asarray(propensity))
        return np.where((u_churn < self.churn_probability(satisfaction)) & can_churn, np.inf, gap)
