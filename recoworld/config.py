"""Pydantic configs for the world: catalog, users, retrieval and reward.

Configs forbid unknown keys, so a typo such as `slate_sise=5` fails loudly and names the field.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recoworld.errors import ConfigError
from recoworld.llm.config import LLMConfig

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Unknown keys and non-finite numbers are errors: a NaN weight would silently poison every reward."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def build(model: type[M], what: str, data: dict[str, Any] | M | None = None, **overrides: Any) -> M:
    """Validate `data` merged with `overrides` into `model`, raising `ConfigError` on bad input."""
    base = data.model_dump() if isinstance(data, BaseModel) else dict(data or {})
    return _validate(model, what, deep_merge(base, overrides))


def constructed(model: type[M], values: dict[str, Any], fields_set: set[str]) -> M:
    """The `model` validation would build from values it already holds, without validating them: `values` is
    every field, in declared order, as validation leaves it, and `fields_set` those the caller gave. What
    `model_construct` builds for a model without aliases, extra fields, private attributes or a post-init,
    at a third of its cost (it looks up each field's aliases and defaults); for the hot paths whose values
    are consistent by construction (the instruction writer's models, a drawn user's profile)."""
    built = _new(model)
    _set(built, "__dict__", values)
    _set(built, "__pydantic_fields_set__", fields_set)
    _set(built, "__pydantic_extra__", None)
    _set(built, "__pydantic_private__", None)
    return built


_new = object.__new__
_set = object.__setattr__


def _validate(model: type[M], what: str, data: dict[str, Any], lines: dict[tuple[Any, ...], int] | None = None) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError.from_validation(what, err, lines) from None


def load_config(
    model: type[M],
    path: str | os.PathLike[str] | None,
    what: str,
    prepare: Callable[[dict[str, Any], Path], dict[str, Any]] | None = None,
    **overrides: Any,
) -> M:
    """`model` from an optional YAML (or JSON) file, with `overrides` (None = keep) merged on top.

    The one way RecoWorld reads a config file (world, population, training, study), so every
    bad file fails the same way: one `ConfigError` that names the file, and the field and its
    line for a value the model rejects. `prepare` rewrites the file's mapping before
    validation, e.g. to resolve paths relative to the file.
    """
    data: dict[str, Any] = {}
    lines: dict[tuple[Any, ...], int] = {}
    if path is not None:
        data, lines = read_yaml(path, what)
        if prepare is not None:
            data = prepare(data, Path(path))
    merged = deep_merge(data, {k: v for k, v in overrides.items() if v is not None})
    return _validate(model, f"{what} {path}" if path is not None else what, merged, lines)


def relative_to_file(*keys: str) -> Callable[[dict[str, Any], Path], dict[str, Any]]:
    """A `load_config` `prepare` that reads the paths under `keys` as relative to the config file,
    so a config works from any working directory (absolute paths stay as they are)."""

    def prepare(data: dict[str, Any], path: Path) -> dict[str, Any]:
        return {**data, **{k: path.parent / data[k] for k in keys if isinstance(data.get(k), str)}}

    return prepare


def read_yaml(path: str | os.PathLike[str], what: str) -> tuple[dict[str, Any], dict[tuple[Any, ...], int]]:
    """The top-level mapping of a YAML file, and the line of each key path in it (for error messages).

    A missing file, a directory, bytes that are not UTF-8, a YAML syntax error (with its line
    and column) and a top level that is not a mapping each give one `ConfigError` naming
    `what` and the file, never an `OSError` or a yaml traceback.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is fine
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory; give the YAML file itself") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8") \
            from None
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be read: {err.strerror}") from None
    try:
        loader = yaml.SafeLoader(text)  # checks for unprintable characters already
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as err:
        raise ConfigError(f"{what} {path} is not valid YAML{_at(err.problem_mark)}: {err.problem}"
                          + (f" ({err.context}{_at(err.context_mark)})" if err.context else "")) from None
    except yaml.reader.ReaderError as err:  # a control character: point at it like a syntax error
        line, column = text.count("\n", 0, err.position) + 1, err.position - text.rfind("\n", 0, err.position)
        raise ConfigError(f"{what} {path} is not valid YAML at line {line}, column {column}: character "
                          f"#x{err.character:04x} is not allowed") from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{what} {path} must be a mapping of keys to values, got {got}")
    return data, _key_lines(node)


def _at(mark: yaml.Mark | None) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _key_lines(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Line (from 1) of every key and list entry under `node`, by its path of keys and indices."""
    children: list[tuple[Any, yaml.Node, yaml.Node]] = []
    if isinstance(node, yaml.MappingNode):
        children = [(key.value, key, value) for key, value in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = [(i, value, value) for i, value in enumerate(node.value)]
    lines: dict[tuple[Any, ...], int] = {}
    for step, at, value in children:
        here = (*path, step)
        lines[here] = at.start_mark.line + 1
        lines.update(_key_lines(value, here))
    return lines


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


#: Continuous persona traits a `TasteConfig.persona` key may name (the rest are `attribute=value` indicators);
#: `recoworld.simulators.choice.persona_features` defines their values.
PERSONA_TRAITS = ("novelty_trait", "time_budget")


class PersonaTaste(StrictModel):
    """One persona feature's interaction with the item's topic and minutes (`TasteConfig`)."""

    topic: list[float] = Field(description="per topic of `TasteConfig.topics`")
    minutes: list[float] = Field(description="per knot of `TasteConfig.minutes_knots`")


class TasteConfig(StrictModel):
    """Tastes the persona's favourite topics do not explain, fitted by `recoworld distill` (issue 33) and played
    by `ChoiceModel`: utility added by the item's topic, subtopic, creator and minutes the same for every user,
    by the persona's favourite score of the item's topic (its interest weight) times the minutes, and by persona
    features times topic and minutes. Minutes enter as steps (1 when the item is longer than a knot), so a length
    threshold is one weight. Names, not positions, tie weights to the catalog: a surrogate played on another
    catalog keeps the tastes whose names it finds."""

    topics: list[str]
    minutes_knots: list[float] = Field(description="ascending minutes; step k is 1 when an item is longer")
    topic: list[float] = Field(description="per topic of `topics`")
    minutes: list[float] = Field(description="per knot")
    subtopic: dict[str, float] = Field(default_factory=dict)
    creator: dict[str, float] = Field(default_factory=dict)
    favourite: list[float] = Field(description="the favourite score's weight, then per knot (favourite x step)")
    persona: dict[str, PersonaTaste] = Field(
        default_factory=dict, description="`attribute=value` (1 when the profile's attribute has that value) or a "
        "trait of PERSONA_TRAITS -> its interaction weights")

    @model_validator(mode="after")
    def _shapes(self) -> TasteConfig:
        k, t = len(self.minutes_knots), len(self.topics)
        if any(b <= a for a, b in zip(self.minutes_knots, self.minutes_knots[1:])):
            raise ValueError(f"minutes_knots must ascend, got {self.minutes_knots}")
        shapes = {"topic": (self.topic, t), "minutes": (self.minutes, k), "favourite": (self.favourite, k + 1)}
        shapes |= {f"persona.{n}.topic": (p.topic, t) for n, p in self.persona.items()}
        shapes |= {f"persona.{n}.minutes": (p.minutes, k) for n, p in self.persona.items()}
        for name, (values, n) in shapes.items():
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} weights for {n} (topics: {t}, knots: {k})")
        bad = [n for n in self.persona if "=" not in n and n not in PERSONA_TRAITS]
        if bad:
            raise ValueError(f"persona keys {bad} are neither attribute=value nor one of {PERSONA_TRAITS}")
        return self


class ChoiceConfig(StrictModel):
    """Weights of the parametric choice model (logit of the click probability).

    `popularity` weighs the item's standardized log popularity, times each user's
    `popularity_affinity` (conformity); `recoworld calibrate` fits it from a log, where
    popularity is the strongest single signal.

    Defaults of the synthetic world (`python experiments/stylized_facts.py` prints the facts):

    - `bias` -4.5 puts the click (positive-interaction) rate per impression at 4.5-7% across
      the baseline recommenders. Band 2-10%: MIND news impression logs (Wu et al., ACL 2020) have
      about 4% of impressions clicked; reported short-video logs sit under 10% (issue 12).
    - `popularity` 0.3 (> 0: a crowd-following term, as on real logs) with the catalog's
      Pareto(1.3) exposure prior (`recoworld.catalog.catalog.EXPOSURE_SHAPE`) and retrieval's
      popular block gives an item-consumption Gini of 0.65 under random slates (0.95 for the
      popular recommender, which shows only the head). Band 0.6-0.9: public logs, e.g.
      MovieLens-100K about 0.63. The weight itself is an assumption; only the Gini is banded.
      The rankers that read taste and not popularity (greedy, diverse, instruct) stay at
      0.48-0.54: their exposure follows each user's clicks, which spread over the catalog. A
      larger weight would concentrate their consumption only by making popularity outbid taste,
      which conflicts with a sourced fact: personalized recommendations earn about 2x the CTR
      of a most-viewed page (Davidson et al., RecSys 2010). Measured before the catalog and
      retrieval changes of issue 27, a weight of 0.6 lifted greedy's Gini from 0.43 to 0.49 but
      cut the taste ranker's CTR lift over random from 1.59x to 1.35x; 0.8 and 1.0 (with a
      popular block of 10% of the candidates) gave 0.53 and 0.57 at lifts of 1.24x and 1.11x,
      and the popular recommender out-clicked the taste ranker (0.099 against 0.078 per user
      at 0.8). The lift is kept; the similarity rankers' Gini is left below the band.
    - `like_threshold` and `share_threshold` keep their values: likes per click come out at
      about 5%, inside an assumed band of 2-25% (like/view ratios of a few percent on video
      platforms; an assumption, not a sourced figure).
    """

    bias: float = -4.5
    relevance: float = 4.0
    quality: float = 1.5
    popularity: float = 0.3
    novelty_mismatch: float = 2.0
    fatigue: float = 1.5
    position: float = 0.35
    duration: float = Field(0.0, description="weight of -log1p(item minutes): > 0 makes long items less "
                            "attractive; 0 in the synthetic world, fitted by `recoworld distill` (LLM users see "
                            "minutes)")
    like_threshold: float = 1.0
    share_threshold: float = 2.6
    taste: TasteConfig | None = Field(None, description="tastes beyond the favourite topics (`recoworld distill`)")


class DynamicsConfig(StrictModel):
    """How the hidden mindset moves within a session and between sessions.

    With clicks on only a few percent of impressions, most reviewed items are skips, so a
    skip's satisfaction target follows the item's relevance (`skip_relevance`): scrolling
    past relevant items that one did not act on is ordinary, scrolling past irrelevant ones
    wears the user down. Without it, skips would set every session's end satisfaction alike
    and the return hazard would no longer respond to the recommender. `skip_relevance` is an
    assumption, chosen so that repetitive slates still raise fatigue, trigger instructions
    earlier, shorten sessions and lower returns (tests/test_user_dynamics.py), and so that
    instruction-following and diverse recommenders keep more users than popular or greedy ones.

    `repetition_similarity` 0.9: an item counts as a near-duplicate of one seen lately (fatigue,
    the "repetitive" exit) from a cosine of 0.9. In the synthetic catalog two items of the same
    subtopic have a cosine of 0.79-0.92 (5th-95th percentile; same topic, other subtopic 0.52-0.77),
    so the former 0.8 made nearly every item of a seen subtopic a near-duplicate: 48% of the items
    a random recommender showed, 79% of a taste-ranked feed's, and any relevant feed wore users
    down as a repeated one does. 0.9 keeps the closest tenth of a subtopic (the same creator's
    series, the same slate repeated), where the complaint "the feed kept showing me the same
    things" belongs. An assumption, read off the catalog's geometry (issue 27).
    """

    interest_drift: float = Field(0.06, ge=0, le=1, description="pull of a consumed item on interests")
    initial_satisfaction: float = Field(0.6, ge=0, le=1, description="a new user's satisfaction, and where it "
                                        "recovers to between sessions")
    satisfaction_rate: float = Field(0.15, gt=0, lt=1)
    satisfaction_short_ema: float = Field(0.5, gt=0, le=1, description="per item weight of the short average of "
                                          "satisfaction (its trend is short - long)")
    satisfaction_long_ema: float = Field(0.1, gt=0, le=1, description="per item weight of the long average")
    click_satisfaction: float = Field(0.35, ge=0, le=1, description="satisfaction a click pulls toward, before "
                                      "the terms below")
    click_relevance: float = Field(0.4, ge=0, le=2, description="a click's target rises by this x relevance")
    click_quality: float = Field(0.35, ge=0, le=2, description="a click's target rises by this x item quality")
    click_fatigue: float = Field(0.3, ge=0, le=2, description="a click's target falls by this x fatigue")
    skip_satisfaction: float = Field(0.3, ge=0, le=1, description="satisfaction an irrelevant skip pulls toward")
    skip_weight: float = Field(0.4, ge=0, le=1, description="a skip moves satisfaction this much less than a click")
    skip_relevance: float = Field(1.0, ge=0, le=2, description="a skipped item's target rises by this x relevance")
    # Fatigue per item is bounded: one item adding 1e308 overflowed the choice model to NaN.
    fatigue_repetition: float = Field(0.08, ge=0, le=10, description="fatigue per near-duplicate item")
    fatigue_low_quality: float = Field(0.02, ge=0, le=10, description="fatigue an item of quality 0 adds")
    low_quality_threshold: float = Field(0.4, gt=0, le=1, description="items of lower quality add fatigue, "
                                         "linearly up to fatigue_low_quality at quality 0")
    fatigue_novelty: float = Field(0.3, ge=0, le=2, description="appetite for novelty rises by this x fatigue")
    fatigue_recovery: float = Field(0.08, ge=1e-6, lt=1, description="per-item decay of fatigue (a denormal "
                                    "such as 5e-324 made satisfaction NaN)")
    repetition_similarity: float = Field(0.9, ge=-1, lt=1, description="near-duplicate from this cosine")
    novelty_jitter: float = Field(0.12, ge=0, description="per-session spread of novelty propensity")
    browse_minutes: float = Field(0.08, gt=0, le=1440, description="time to look at and skip an item, at most a "
                                  "day's minutes")
    satisfaction_collapse: float = Field(0.12, ge=0, le=1, description="leave below this satisfaction")
    instruction_trend: float = Field(0.08, ge=0, description="instruct when the trend falls below -this")
    instruction_level: float = Field(0.35, ge=0, le=1, description="or when satisfaction is below this")
    instruction_cooldown: int = Field(4, ge=0, description="turns between two instructions")
    instruction_strength: float = Field(0.5, ge=0, le=2, description="how strongly an instruction moves interests")
    memory_size: int = Field(30, ge=1, le=1000)
    dislike_margin: float = Field(
        8.0, gt=0,
        description="a skipped item is disliked ('not interested') when its click utility plus the click noise "
        "is below -this (the click threshold is 0). An assumption, not fitted: the default gives a few percent "
        "of impressions (3.0% under a random recommender in the default world of issue 27; earlier 6 gave 16%, 10 gave "
        "0.6%), the order of explicit negative feedback on short-video feeds; tests/test_reactions.py checks the band",
    )
    dislike_satisfaction: float = Field(0.0, ge=0, le=1, description="satisfaction a dislike pulls toward")
    dislike_weight: float = Field(
        1.0, ge=0, le=1, description="a dislike moves satisfaction this much of a click's rate (a skip: skip_weight)"
    )
    dislike_push: float = Field(0.02, ge=0, le=1, description="a dislike pushes interests away from the item by this")


class ReturnConfig(StrictModel):
    """The return-gap hazard, driven by end-of-session satisfaction s.

    rate = base_rate * exp(satisfaction_effect * (s - satisfaction_reference)) * (propensity / 0.5)  [returns/day]
    gap ~ Gamma(shape=gap_shape, mean=1/rate): above 1 the hazard rises from zero, below 1 it falls
    churn probability = sigmoid(churn_bias - churn_satisfaction * s), once the user has made
    `churn_after` consumptions (0: from the first session; `recoworld calibrate` sets a log's
    floor, e.g. MovieLens keeps only users with at least 20 ratings, so none of them left sooner)

    `satisfaction_reference` is the satisfaction at which a user returns at exactly their
    base rate: 0.5 (the middle of the scale) in the synthetic world. `recoworld calibrate`
    sets it so that the return rates it fits from a log hold on average over the calibrated
    users' end-of-session satisfaction; retention still responds to how a session went.

    Defaults of the synthetic world: a Gamma shape of 0.5 (a falling hazard: users come back
    soon or stay away long), mixed over users by their return propensity and satisfaction,
    gives heavy-tailed gaps between sessions: median about 1-2 days, p99 2-3 weeks, mean
    2.2-4.2 days over the baselines. `base_rate` 0.3 (was 0.35): once a relevance ranker paid
    (issue 27), its users came back after 1.96 days on average, under the band; 0.3 puts every
    baseline's mean inside it. Bands: KuaiSim's baselines return after 3.48-3.57 days on average
    (REFERENCE.md; band 2-5 days); gap distributions of real logs are heavy-tailed
    (lognormal/Pareto-like, p99 of weeks; band 7-30 days, the 30-day horizon caps it). The
    family is the one `recoworld calibrate` fits (Gamma gaps with per-user rates), so a
    calibrated world and the default share a model. The median and day-1/day-7 return bands
    of docs/results.md ("Realism") are assumptions.
    """

    base_rate: float = Field(0.3, gt=0, description="returns per day at neutral satisfaction")
    gap_shape: float = Field(0.5, ge=1e-3, description="Gamma shape of the gap; 1 is memoryless, < 1 bursty; "
                             "at least 1e-3 (a denormal shape gave NaN gaps)")
    satisfaction_effect: float = Field(4.0, ge=0)
    satisfaction_reference: float = Field(0.5, ge=0, le=1, description="satisfaction of the neutral base rate")
    churn_bias: float = -2.5
    churn_satisfaction: float = Field(4.0, ge=0)
    churn_after: int = Field(0, ge=0, description="consumptions before a user can churn (a log's inclusion floor)")
    interest_memory_days: float = Field(3.0, gt=0, description="time constant of interest regression")
    fatigue_recovery_days: float = Field(0.5, gt=0)
    satisfaction_recovery_days: float = Field(0.5, gt=0)


class RetrievalConfig(StrictModel):
    """The platform's candidate generator. It sees only platform-visible history.

    Defaults of the synthetic world (issue 27): 30% of the candidates from similarity to the
    user's latest engaged items, 45% drawn by popularity, the rest uniform (the instruction block
    takes from the uniform part while an instruction is active). Formerly 50% / 25%: half of the
    candidates already sat next to the user's clicks, so even a random slate of them was largely
    on taste and a relevance ranker had little left to add (per-user CTR lift over random 1.59x,
    2.0x with a 20% interest block), while exposure was nearly even over the catalog (the Gini of
    impressions was 0.23-0.26 under every baseline) and random's item-consumption Gini stayed
    under the band of real logs (0.55 against 0.6-0.9, MovieLens-100K about 0.63). Real candidate
    generators lean on popularity (popular and trending sources beside the personalized ones),
    which is what concentrates exposure; the split itself is an assumption, set so that the
    personalization lift (Davidson et al., RecSys 2010: about 2x) and random's Gini both land in
    their bands (`python experiments/stylized_facts.py`).
    """

    interest_share: float = Field(0.3, ge=0, le=1, description="share of candidates from history similarity")
    popular_share: float = Field(0.45, ge=0, le=1, description="share of candidates drawn by popularity")
    instruction_share: float = Field(
        0.2, ge=0, le=1,
        description="share of candidates that answer the user's latest instruction of the session (items "
        "that honour its intent, drawn from the whole catalog, nearest its direction first); taken from the "
        "exploration block while an instruction is active",
    )
    exclude_recent: int = Field(50, ge=0, description="do not re-offer the last N shown items")
    search_cap: int = Field(
        5, ge=0, le=1000,
        description="catalog-search items the platform admits into one user's candidates per turn "
        "(`recoworld.envs.search`, ToolRec's `search` tool), each in place of the lowest-priority candidate; "
        "0 turns the search service off. At most n_candidates; the default 5 admits n_candidates when there "
        "are fewer",
    )
    index: Literal["exact", "ivf", "hnsw"] = Field(
        "exact",
        description="how the interest block finds the items nearest a user's taste: 'exact' scores the whole "
        "catalog; 'ivf' (inverted lists over k-means cells) and 'hnsw' (a navigable small-world graph) search "
        "a faiss approximate nearest-neighbour index, as production candidate generators do "
        "(`recoworld.envs.ann_index`). An approximate index changes which candidates users see, so a world "
        "calibrated or validated with one index must be calibrated and validated again with another "
        "(`recoworld calibrate`, `recoworld validate`); recall and the baselines' ranking against exact: "
        "`python experiments/bench_ann.py`",
    )
    refresh_every: int = Field(
        1, ge=1, le=10_000,
        description="turns a user's taste ranking is kept before a changed taste is searched again (one "
        "retrieval opens each session and follows each turn): 1 searches after every turn that changed the "
        "taste; production systems refresh user vectors in batches, which a larger value plays",
    )
    nlist: int | None = Field(
        None, ge=1, le=1_000_000,
        description="index 'ivf': k-means cells of the catalog, at most its number of items; None = the square "
        "root of the catalog size",
    )
    nprobe: int = Field(
        8, ge=1, le=1_000_000,
        description="index 'ivf': cells searched per query, at most nlist (a default nlist caps it); more is "
        "closer to exact and slower",
    )
    hnsw_m: int = Field(32, ge=2, le=512, description="index 'hnsw': graph neighbours per item")
    ef_search: int = Field(
        128, ge=1, le=100_000,
        description="index 'hnsw': candidates kept while searching (faiss searches at least as deep as the "
        "ranking kept, `CandidateRetriever.taste_depth`); more is closer to exact and slower",
    )
    index_seed: int = Field(
        0, ge=0, le=2**31 - 1,
        description="seed of the index's random draws (the k-means start of 'ivf', the graph levels of "
        "'hnsw'): part of the world, like `catalog.seed`, so every user and view of a world searches one index",
    )

    @model_validator(mode="after")
    def _shares(self) -> RetrievalConfig:
        total = self.interest_share + self.popular_share + self.instruction_share
        if total > 1:
            raise ValueError(
                "interest_share + popular_share + instruction_share must be <= 1, got "
                f"{self.interest_share} + {self.popular_share} + {self.instruction_share}"
            )
        if self.nlist is not None and self.nprobe > self.nlist:
            raise ValueError(f"nprobe must be <= nlist, got nprobe={self.nprobe} with nlist={self.nlist}")
        return self


#: The largest reward weight, either sign. Rewards are products of weights and counts (minutes, items)
#: summed over turns and episodes: finite weights near 1e308 gave inf rewards and totals. A weight of
#: 1e6 keeps a total over millions of turns well inside float32.
MAX_REWARD_WEIGHT = 1e6
RewardWeight = Annotated[float, Field(ge=-MAX_REWARD_WEIGHT, le=MAX_REWARD_WEIGHT)]


class RewardConfig(StrictModel):
    """Multi-turn retention reward.

    per turn:       dwell * sum(dwell minutes) + click * n_clicks + like * n_likes + share * n_shares
                    + instruction_following * (share of the slate honouring the session's latest instruction)
                    + dislike * n_dislikes                                (explicit "not interested")
    at session end: + return_bonus * exp(-gap_days / return_tau_days)   (user comes back)
                    + churn_penalty                                       (user never comes back)

    Each weight lies within +-MAX_REWARD_WEIGHT.
    """

    dwell: RewardWeight = 0.1
    click: RewardWeight = 0.5
    like: RewardWeight = 1.0
    share: RewardWeight = 2.0
    return_bonus: RewardWeight = 10.0
    return_tau_days: float = Field(1.0, gt=0)
    churn_penalty: RewardWeight = -10.0
    instruction_following: RewardWeight = Field(
        0.0, description="weight of the instruction-following term; 0 leaves the user as the only judge"
    )
    dislike: float = Field(
        0.0, ge=-MAX_REWARD_WEIGHT, le=0,
        description="reward per disliked ('not interested') item, <= 0; 0 by default, so the reward is unchanged "
        "unless asked: a dislike already costs through the user's satisfaction and return",
    )


class WorldConfig(StrictModel):
    """Everything that defines one `RecoWorld-v0` world."""

    slate_size: int = Field(10, ge=1, le=100)
    n_candidates: int = Field(50, ge=1, le=10_000)
    history_len: int = Field(20, ge=1, le=1000)
    horizon_days: float = Field(30.0, gt=0, le=3650)
    max_steps: int = Field(5000, ge=1, description="safety truncation, in turns")
    on_duplicate: Literal["replace", "error"] = "replace"
    expose_mindset: bool = False
    instruction_channel: Literal["structured", "text", "none"] = Field(
        "structured", description="what the recommender gets of an instruction: 'structured' = the parsed intent "
        "(observation vector, info['instruction_intent']) and the text; 'text' = the text and, in the observation, "
        "[present, 0, 0, 0] + the text's embedding mapped into item space (no parsed intent); 'none' = nothing "
        "(an ablation). The world itself (retrieval, measures, trajectories) always uses the parsed instruction",
    )
    instruction_encoder: Literal["tfidf", "sentence", "auto"] = Field(
        "tfidf", description="text encoder behind the 'text' channel and the embedding-similarity measure "
        "(recoworld.catalog.text_space): hashed TF-IDF, or the all-MiniLM-L6-v2 sentence model when installed",
    )
    user_backend: Literal["parametric", "llm", "surrogate"] = "parametric"
    llm: LLMConfig = Field(default_factory=LLMConfig, description="chat model of LLM users (user_backend='llm')")
    surrogate: Path | None = Field(
        None, description="user_backend='surrogate': the --out folder of `recoworld distill`, whose fitted choice, "
        "dynamics and returns replace this world's, and whose per-user fits adapt every drawn user "
        "(recoworld.simulators.surrogate)",
    )
    catalog: CatalogConfig = CatalogConfig()
    choice: ChoiceConfig = ChoiceConfig()
    dynamics: DynamicsConfig = DynamicsConfig()
    returns: ReturnConfig = ReturnConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    reward: RewardConfig = RewardConfig()

    @field_validator("surrogate")
    @classmethod
    def _distilled_folder(cls, folder: Path | None) -> Path | None:
        """A distilled folder, checked when the config loads, so a typo fails before any user is built."""
        if folder is None:
            return None
        missing = [f for f in ("world.yaml", "calibration.json") if not (folder / f).is_file()]
        if missing:
            raise ValueError(f"{folder} is not a `recoworld distill` folder (missing {', '.join(missing)})")
        return folder

    @model_validator(mode="after")
    def _surrogate_named(self) -> WorldConfig:
        if self.user_backend == "surrogate" and self.surrogate is None:
            raise ValueError("user_backend 'surrogate' needs surrogate: DIR, the --out folder of `recoworld distill`")
        return self

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
        if "search_cap" in self.retrieval.model_fields_set and self.retrieval.search_cap > self.n_candidates:
            raise ValueError(
                f"retrieval.search_cap must be <= n_candidates, got {self.retrieval.search_cap} "
                f"> n_candidates={self.n_candidates}"
            )
        return self
