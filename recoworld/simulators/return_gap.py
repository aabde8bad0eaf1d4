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

    def continuation(
        self, absent_days: np.ndarray, propensity: np.ndarray, uniforms: np.ndarray,
        can_churn: np.ndarray | bool = True, satisfaction: np.ndarray | float | None = None,
    ) -> np.ndarray:
        """Gap in days from "now" to each user's next session, given that they have already been
        away `absent_days` since their last session ended; `inf` = churned at that session end.

        Why: a user picked up mid-life (at a log's cutoff) is not a user starting fresh. Someone
        whose last session ended `d` days ago has either churned at it, or drew a gap G > d and
        is still away. Under this model (G = Gamma(shape k, mean 1 / rate), churn with probability
        c at a session end) the posterior of churn is c / (c + (1 - c) S(d)) with S(d) = P(G > d),
        so long absences make churn likely (for c > 0), and a user who has not churned comes back
        after the residual gap G - d | G > d, drawn by inverse CDF. With d = 0 this is the plain
        session end: churn with probability c, else a gap G.

        `uniforms` (B, 2) are each user's own draws in [0, 1): column 0 decides churn, column 1 the
        residual gap; `propensity` is the profiles' return propensity; `satisfaction` defaults to
        the neutral `satisfaction_reference` (nothing is known of how the last session went);
        `can_churn` False (a user below `churn_after` consumptions) rules churn out, as `sample` does.
        """
        from scipy.special import gammaincc, gammainccinv

        c = self.config
        d = np.maximum(np.asarray(absent_days, dtype=np.float64), 0.0)
        u = np.asarray(uniforms, dtype=np.float64).reshape(len(d), 2)
        sat = np.full(len(d), c.satisfaction_reference if satisfaction is None else satisfaction, dtype=np.float64)
        rate = self.rate(sat, np.asarray(propensity, dtype=np.float64))
        k = c.gap_shape
        # G = Gamma(k, scale 1) / (k * rate), as `UserStreams.churn_and_gap` draws it: P(G > d) = Q(k, k rate d).
        survive = gammaincc(k, k * rate * d)
        churn = np.where(can_churn, self.churn_probability(sat), 0.0)
        staying = (1.0 - churn) * survive
        total = churn + staying
        p_churn = np.divide(churn, total, out=np.ones_like(total), where=total > 0)
        # Upper-tail inverse: Q(k, k rate x) = S(d) (1 - v), v ~ U[0, 1), gives x ~ G | G > d, so x >= d.
        tail = survive * (1.0 - u[:, 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            x = gammainccinv(k, tail) / (k * rate)
        gap = np.maximum(x - d, 0.0)
        gap = np.where(np.isnan(gap) | (tail <= 0), np.inf, gap)  # S(d) underflowed: never back in any horizon
        return np.where(u[:, 0] < p_churn, np.inf, gap)
