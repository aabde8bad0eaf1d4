"""The shared platform: what users of one world see of each other.

In the population world users share one platform. Likes and shares add to an item's
live engagement (decaying each step), which changes what others *see* (retrieval's
popular block and the popularity feature follow live popularity) and what others
*prefer* (a click-utility bonus that saturates with engagement). Items can also be
published during the horizon (creator studies), so what can be offered depends on each
user's clock. A world without a platform (the single-user and vector envs) uses the
catalog's static popularity and publishes everything on day 0.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from recoworld.catalog import Catalog, popularity_feature
from recoworld.config import StrictModel
from recoworld.mindset import ReactionType


class SocialConfig(StrictModel):
    """How users influence each other through the shared platform."""

    like_weight: float = Field(1.0, ge=0, description="live engagement added by a like")
    share_weight: float = Field(3.0, ge=0, description="live engagement added by a share")
    decay: float = Field(0.98, gt=0, le=1, description="per-step decay of live engagement")
    retrieval_weight: float = Field(0.5, ge=0, le=1, description="share of live engagement in retrieval popularity")
    utility_bonus: float = Field(0.8, ge=0, description="click-utility bonus of an item at full social proof")
    half_saturation: float = Field(5.0, gt=0, description="live engagement at which social proof is one half")


class SharedPlatform:
    """The state every user of the world shares: live engagement and item release days."""

    def __init__(self, catalog: Catalog, social: SocialConfig, release_day: np.ndarray) -> None:
        self.catalog = catalog
        self.social = social
        self.release_day = release_day
        self._all_released = bool((release_day <= 0).all())
        self.engagement = np.zeros(len(catalog), dtype=np.float64)
        self._prior = catalog.popularity.astype(np.float64) / float(catalog.popularity.sum())
        self.features = catalog.item_features.copy()  # the popularity column follows live popularity

    def popularity(self) -> np.ndarray:
        """(N,) what retrieval samples the popular block from: prior blended with live engagement."""
        total = self.engagement.sum()
        if total <= 0:
            return self._prior
        w = self.social.retrieval_weight
        return (1 - w) * self._prior + w * self.engagement / total

    def social_proof(self, items: np.ndarray) -> np.ndarray:
        """In [0, 1): how much others have liked and shared these items lately."""
        e = self.engagement[items]
        return e / (e + self.social.half_saturation)

    def update(self, slates: np.ndarray, reactions: np.ndarray) -> np.ndarray:
        """Decay, then add this step's likes and shares; returns the new live popularity."""
        s = self.social
        self.engagement *= s.decay
        gain = np.where(reactions >= ReactionType.SHARE, s.share_weight,
                        np.where(reactions >= ReactionType.LIKE, s.like_weight, 0.0))
        np.add.at(self.engagement, slates.ravel(), gain.ravel())
        pop = self.popularity()
        self.features[:, self.catalog.feature_layout.column("log_popularity")] = popularity_feature(pop)
        return pop

    def utility_bonus(self, slates: np.ndarray) -> np.ndarray:
        """(R, K) what social proof adds to each shown item's click utility."""
        return self.social.utility_bonus * self.social_proof(slates)

    def unreleased(self, now_days: np.ndarray) -> np.ndarray | None:
        """(R, N) items not yet published at each user's clock, or None when all are out."""
        if self._all_released:
            return None
        return self.release_day[None, :] > np.asarray(now_days)[:, None]


def hold_back(release_day: np.ndarray, share: float, horizon_days: float, rng: np.random.Generator) -> np.ndarray:
    """Publish `share` of the items live on day 0 at uniform times over the horizon instead."""
    release = release_day.copy()
    if share > 0:
        live = np.flatnonzero(release <= 0)
        held = rng.choice(live, size=int(share * len(live)), replace=False)
        release[held] = rng.uniform(0.0, horizon_days, len(held))
    return release
