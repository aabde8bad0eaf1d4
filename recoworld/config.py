"""Pydantic configs for the world: catalog, users, retrieval and reward.

Configs forbid unknown keys, so a typo such as `slate_sise=5` fails loudly and names the field.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recoworld.errors import ConfigError
from recoworld.llm.config import LLMConfig

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def build(model: type[M], what: str, data: dict[str, Any] | M | None = None, **overrides: Any) -> M:
    """Validate `data` merged with `overrides` into `model`, raising `ConfigError` on bad input."""
    base = data.model_dump() if isinstance(data, BaseModel) else dict(data or {})
    try:
        return model.model_validate(deep_merge(base, overrides))
    except ValidationError as err:
        raise ConfigError.from_validation(what, err) from None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class CatalogConfig(StrictModel):
    """How the synthetic catalog is generated. The catalog seed is separate from the env seed:
    the world's content stays fixed while the users vary."""

    n_items: int = Field(3000, ge=10, le=2_000_000, description="number of items")
    n_topics: int | None = Field(None, ge=1, description="cut the taxonomy to this many topics")
    embedding_dim: int = Field(32, ge=4, le=1024)
    multimodal_dim: int = Field(0, ge=0, le=4096, description="0 disables multimodal features")
    semantic_id_levels: int = Field(3, ge=1, le=8)
    semantic_id_codebook: int = Field(16, ge=2, le=4096)
    creators_per_topic: int = Field(12, ge=1)
    seed: int = Field(0, ge=0)


class ChoiceConfig(StrictModel):
    """Weights of the parametric choice model (logit of the click probability).

    `popularity` weighs the item's standardized log popularity, times each user's
    `popularity_affinity` (conformity). It is 0 in the synthetic default world, whose
    catalog already ties popularity to quality; `recoworld calibrate` fits it from a log,
    where popularity is the strongest single signal.
    """

    bias: float = -1.2
    relevance: float = 4.0
    quality: float = 1.5
    popularity: float = 0.0
    novelty_mismatch: float = 2.0
    fatigue: float = 1.5
    position: float = 0.35
    like_threshold: float = 1.0
    share_threshold: float = 2.6


class DynamicsConfig(StrictModel):
    """How the hidden mindset moves within a session and between sessions."""

    interest_drift: float = Field(0.06, ge=0, le=1, description="pull of a consumed item on interests")
    satisfaction_rate: float = Field(0.15, gt=0, lt=1)
    skip_satisfaction: float = Field(0.3, ge=0, le=1, description="satisfaction a skipped item pulls toward")
    skip_weight: float = Field(0.4, ge=0, le=1, description="a skip moves satisfaction this much less than a click")
    fatigue_repetition: float = Field(0.08, ge=0, description="fatigue per near-duplicate item")
    fatigue_low_quality: float = Field(0.02, ge=0)
    fatigue_recovery: float = Field(0.08, gt=0, lt=1, description="per-item decay of fatigue")
    repetition_similarity: float = Field(0.8, ge=-1, lt=1)
    novelty_jitter: float = Field(0.12, ge=0, description="per-session spread of novelty propensity")
    browse_minutes: float = Field(0.08, gt=0, description="time to look at and skip an item")
    satisfaction_collapse: float = Field(0.12, ge=0, le=1, description="leave below this satisfaction")
    instruction_trend: float = Field(0.08, ge=0, description="instruct when the trend falls below -this")
    instruction_level: float = Field(0.35, ge=0, le=1, description="or when satisfaction is below this")
    instruction_cooldown: int = Field(4, ge=0, description="turns between two instructions")
    instruction_strength: float = Field(0.5, ge=0, le=2, description="how strongly an instruction moves interests")
    memory_size: int = Field(30, ge=1, le=1000)


class ReturnConfig(StrictModel):
    """The return-gap hazard, driven by end-of-session satisfaction s.

    rate = base_rate * exp(satisfaction_effect * (s - satisfaction_reference)) * (propensity / 0.5)  [returns/day]
    gap ~ Gamma(shape=gap_shape, mean=1/rate): the hazard rises from zero, so nobody is back instantly
    churn probability = sigmoid(churn_bias - churn_satisfaction * s)

    `satisfaction_reference` is the satisfaction at which a user returns at exactly their
    base rate: 0.5 (the middle of the scale) in the synthetic world. `recoworld calibrate`
    sets it so that the return rates it fits from a log hold on average over the calibrated
    users' end-of-session satisfaction; retention still responds to how a session went.
    """

    base_rate: float = Field(0.6, gt=0, description="returns per day at neutral satisfaction")
    gap_shape: float = Field(2.0, gt=0, description="Gamma shape of the gap; 1 is memoryless")
    satisfaction_effect: float = Field(3.0, ge=0)
    satisfaction_reference: float = Field(0.5, ge=0, le=1, description="satisfaction of the neutral base rate")
    churn_bias: float = -2.5
    churn_satisfaction: float = Field(4.0, ge=0)
    interest_memory_days: float = Field(3.0, gt=0, description="time constant of interest regression")
    fatigue_recovery_days: float = Field(0.5, gt=0)
    satisfaction_recovery_days: float = Field(0.5, gt=0)


class RetrievalConfig(StrictModel):
    """The platform's candidate generator. It sees only platform-visible history."""

    interest_share: float = Field(0.5, ge=0, le=1, description="share of candidates from history similarity")
    popular_share: float = Field(0.25, ge=0, le=1)
    exclude_recent: int = Field(50, ge=0, description="do not re-offer the last N shown items")

    @model_validator(mode="after")
    def _shares(self) -> RetrievalConfig:
        if self.interest_share + self.popular_share > 1:
            raise ValueError(
                "interest_share + popular_share must be <= 1, got "
                f"{self.interest_share} + {self.popular_share}"
            )
        return self


class RewardConfig(StrictModel):
    """Multi-turn retention reward.

    per turn:       dwell * sum(dwell minutes) + click * n_clicks + like * n_likes + share * n_shares
    at session end: + return_bonus * exp(-gap_days / return_tau_days)   (user comes back)
                    + churn_penalty                                       (user never comes back)
    """

    dwell: float = 0.1
    click: float = 0.5
    like: float = 1.0
    share: float = 2.0
    return_bonus: float = 10.0
    return_tau_days: float = Field(1.0, gt=0)
    churn_penalty: float = -10.0


class WorldConfig(StrictModel):
    """Everything that defines one `RecoWorld-v0` world."""

    slate_size: int = Field(10, ge=1, le=100)
    n_candidates: int = Field(50, ge=1, le=10_000)
    history_len: int = Field(20, ge=1, le=1000)
    horizon_days: float = Field(30.0, gt=0, le=3650)
    max_steps: int = Field(5000, ge=1, description="safety truncation, in turns")
    on_duplicate: Literal["replace", "error"] = "replace"
    expose_mindset: bool = False
    user_backend: Literal["parametric", "llm"] = "parametric"
    llm: LLMConfig = Field(default_factory=LLMConfig, description="chat model of LLM users (user_backend='llm')")
    catalog: CatalogConfig = CatalogConfig()
    choice: ChoiceConfig = ChoiceConfig()
    dynamics: DynamicsConfig = DynamicsConfig()
    returns: ReturnConfig = ReturnConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    reward: RewardConfig = RewardConfig()

    @model_validator(mode="after")
    def _slate_fits(self) -> WorldConfig:
        if self.slate_size > self.n_candidates:
            raise ValueError(
                f"slate_size must be <= n_candidates, got slate_size={self.slate_size} "
                f"> n_candidates={self.n_candidates}"
            )
        if self.n_candidates > self.catalog.n_items:
            raise ValueError(
                f"n_candidates must be <= catalog.n_items, got {self.n_candidates} > {self.catalog.n_items}"
            )
        return self
