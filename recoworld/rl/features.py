"""Observation wrappers that make `RecoWorld-v0` learnable by generic RL libraries.

The raw observation is a `Dict` of ~2,000 numbers (50 candidates x 35 features plus
history). A generic MLP policy would have to discover, from scratch, that what matters
about a candidate is how it relates to *this* user's history: a bilinear interaction that
costs far more samples than a few minutes of PPO can afford. `UserRelativeObservation`
computes those relations once, in the env, and hands the policy a small vector:

Per candidate (C rows of `N_CANDIDATE_FEATURES`, candidate-major):

| column | meaning                                                          |
|--------|------------------------------------------------------------------|
| 0      | mean cosine similarity to history items the user engaged with    |
| 1      | mean cosine similarity to history items the user skipped         |
| 2      | max cosine similarity to any history item (repetition)           |
| 3      | cosine similarity to the last instruction's direction (0 if none) |
| 4-6    | quality, log-duration, log-popularity (as in `candidate_features`) |
| 7      | available (the env's `candidate_mask`)                           |
| 8      | cosine similarity to the episode's engaged profile (0 if none)   |
| 9      | cosine similarity to the episode's skipped profile (0 if none)   |

Global (`N_GLOBAL_FEATURES`): the instruction flags [present, more, less, different],
the shares of skip/click/like/share/padding in the history, the clock squashed to
[0, 1) by tanh (day / 7, session / 10, turn / 10, days since the last session), and
tanh(engaged items this episode / 5), how much the engaged profile has to go on. Nothing
depends on the horizon, so a policy can be evaluated on a longer horizon than it trained on.

## The episode profile: why the policy needs memory
The observation's history holds the last `history_len` reviewed items (10 on
configs/ppo_small.yaml). With about 4% of impressions clicked, that window usually holds no
engaged item at all, so columns 0-1 rarely say what the user likes, and what brings a user
back is the relevance of what they are shown (the return rate follows the satisfaction a
session ends on, and a skipped item's pull on satisfaction grows with its relevance).
A platform logs every reaction, though. `EpisodeProfile` keeps, per user, a decaying sum
(`PROFILE_DECAY` per turn) of the embeddings of every engaged and every skipped item
since the episode began, folded in from the newest history rows after each turn, and the
features read it (columns 8-9). Measured with hand-written rankers on configs/ppo_small.yaml
(300 users, paired with random): ranking by similarity to this profile, with a penalty for
near-duplicates of the history, +0.037 ± 0.022 retention; ranking by the *hidden* current
interests +0.042 ± 0.020; by the observation's 10-item window (greedy) below random. It is
built only from what the platform saw (items shown and reactions), never from the mindset.

## The intent block (`features: intent`)
The instruct baseline acts on the structured intent of the session's last instruction
(`info["instruction_intent"]`: more of, less of or something different from the named topics,
suggested related topics, maybe high quality), which the columns above see only as flags and a
cosine to the intent's direction: they cannot tell that a candidate is on a named or a suggested
topic. `INTENT` adds, per candidate (columns 10-14): its named-topic membership signed by the
intent's kind (+1 for `more`, -1 for `less`/`different`, 0 off the named topics or without an
intent), its related-topic membership (0/1), its quality when the intent asked for quality (else
0), its cosine to the taste the greedy and instruct baselines keep (the last `TASTE_ITEMS` engaged
items, weighted by reaction and by `TASTE_RECENCY` per newer engaged item; 0 before any), and the
instruct baseline's own score / 3 (that cosine, or the log-popularity before any engagement, plus
the three intent columns): a deployable heuristic's output, so the policy can learn a correction
on top of it. Globals: the intent's kind [more, less, different], quality asked, and whether there
is a taste yet. `EpisodeProfile` keeps the intent from the info the platform gets after each turn,
for the rest of the session (forgotten when an observation opens a session, as instruct forgets it
when the user leaves), and the candidates' topics come from the catalog the platform serves: all
three paths hand it the same info and catalog, so the block is bit for bit the same in training and
evaluation. Nothing of the hidden mindset enters it.

With `action_mask=True` (default) the observation is
`Dict(action_mask=Box(0, 1, (K * C,)), observations=Box(...))`, the format of RLlib's
`ActionMaskingTorchRLModule`: the candidate mask is repeated once per slate slot, because
a `MultiDiscrete([C] * K)` action's logits are the K slots' logits concatenated.
Already-consumed candidates then can never be sampled while at least one is available.

`UserRelativeVectorObservation` is the same wrapper for a vector env (`RecoWorldVectorEnv`,
as `recoworld train`'s env runners use): one batched `user_relative_features` call over the
users' axis. Both wrappers and `RLlibRecommender` share that one implementation, and a
user's features are bit for bit the same alone as in a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv, VectorWrapper
from gymnasium.vector.utils import batch_space

from recoworld.catalog import Catalog
from recoworld.catalog.features import FeatureLayout, embedding_part
from recoworld.errors import ConfigError
from recoworld.mindset import UNSEEN

N_CANDIDATE_FEATURES = 10
N_GLOBAL_FEATURES = 4 + 5 + 4 + 1


class FeatureSet(NamedTuple):
    """A layout of the policy's features: `per_candidate` columns per candidate, then `globals`."""

    name: str
    per_candidate: int
    globals: int

    def width(self, n_candidates: int) -> int:
        return n_candidates * self.per_candidate + self.globals


#: The features above (the default, what every policy trained before `SESSION` reads).
EPISODE = FeatureSet("episode", N_CANDIDATE_FEATURES, N_GLOBAL_FEATURES)
#: `EPISODE` and the session block (see the module docstring): 3 more columns per candidate, 4 more globals.
SESSION = FeatureSet("session", N_CANDIDATE_FEATURES + 3, N_GLOBAL_FEATURES + 4)
#: `EPISODE` and the intent block (see the module docstring): 5 more columns per candidate, 5 more globals.
INTENT = FeatureSet("intent", N_CANDIDATE_FEATURES + 5, N_GLOBAL_FEATURES + 5)
FEATURE_SETS = {f.name: f for f in (EPISODE, SESSION, INTENT)}


def feature_set_of(width: int, n_candidates: int) -> FeatureSet:
    """The feature set whose vector for `n_candidates` candidates is `width` long: how a saved policy says
    which features it was trained on."""
    for features in FEATURE_SETS.values():
        if features.width(n_candidates) == width:
            return features
    raise ConfigError(f"a policy input of {width} features matches no feature set for {n_candidates} candidates ("
                      + ", ".join(f"{f.name}: {f.width(n_candidates)}" for f in FEATURE_SETS.values()) + ")")

#: Per-turn decay of `EpisodeProfile`'s sums: a memory of about 50 turns, several sessions.
#: Measured with a hand-written profile ranker (300 users): 0.98 and 1.0 (no decay) alike,
#: 0.9 (about 10 turns) lost a third of the gain over random.
PROFILE_DECAY = 0.98
#: Keys `EpisodeProfile.augment` adds to a raw observation; `user_relative_features` reads them.
PROFILE_KEYS = ("engaged_profile", "skipped_profile", "episode_engaged", "recent_items", "recent_seen",
                "session_profile", "session_state", "taste_profile", "intent_topics", "intent_state")
#: Reviewed items the `SESSION` features' repetition column looks back over: the simulated users' memory
#: (`DynamicsConfig.memory_size`), which their repetition fatigue reads, against the observation's 10.
RECENT_ITEMS = 30
#: The `INTENT` block's taste: the last `TASTE_ITEMS` engaged items, weighted by reaction (`TASTE_WEIGHT`: skip,
#: click, like, share) and by `TASTE_RECENCY` per newer engaged item, as the greedy and instruct baselines keep it.
TASTE_ITEMS = 20
TASTE_RECENCY = 0.9
TASTE_WEIGHT = np.array([0.0, 1.0, 2.0, 3.0])
#: Intent kinds in the order of `intent_state`'s columns (0 in `EpisodeProfile.intent_kind`: none in force).
INTENT_KINDS = ("more", "less", "different")


class EpisodeProfile:
    """Per-user memory of a whole episode, from what the platform logged: decaying sums of the
    embeddings of the items each user engaged with and skipped (see the module docstring), and
    what the `SESSION` features read: the last `RECENT_ITEMS` reviewed items, this session's
    engaged items and turns since the last engagement, and how familiar the items the user
    engaged with and skipped were when shown.

    After every turn call `update` with the new observation and how many items the user
    reviewed in that turn (those are the newest `n` rows of its history); `augment` then adds
    `PROFILE_KEYS` to an observation for `user_relative_features`. Every operation is row-wise,
    so a user's profile is bit for bit the same alone (`n_users=1`) as in a batch.

    With a `catalog` it also keeps what the `INTENT` features read: each user's taste (the last
    `TASTE_ITEMS` engaged items) and the structured intent of the session's last instruction
    (`update`'s `intents`, from `info["instruction_intent"]`), forgotten when a session opens.

    Args:
        n_users: rows (users) kept.
        dim: item embedding dimension.
        decay: multiplies the sums once per turn (`PROFILE_DECAY`).
        catalog: the platform's catalog (its items' topics), to keep the `INTENT` block; None keeps none of it.
    """

    def __init__(self, n_users: int, dim: int, decay: float = PROFILE_DECAY, catalog: Catalog | None = None) -> None:
        self.decay = decay
        self.catalog = catalog
        n_topics = catalog.n_topics if catalog is not None else 0
        self.taste = np.zeros((n_users, TASTE_ITEMS, dim), np.float32)  # ring buffer of engaged items
        self.taste_weight = np.zeros((n_users, TASTE_ITEMS), np.float64)  # reaction weight, 0 = empty slot
        self.taste_order = np.zeros((n_users, TASTE_ITEMS), np.int64)  # which engaged item of the episode
        self.taste_next = np.zeros(n_users, np.int64)
        self.intent_kind = np.zeros(n_users, np.int64)  # 0: none in force, else 1 + INTENT_KINDS.index(kind)
        self.intent_named = np.zeros((n_users, n_topics), bool)
        self.intent_related = np.zeros((n_users, n_topics), bool)
        self.intent_quality = np.zeros(n_users, bool)
        self.engaged = np.zeros((n_users, dim), np.float64)
        self.skipped = np.zeros((n_users, dim), np.float64)
        self.n_engaged = np.zeros(n_users, np.float64)
        self.recent = np.zeros((n_users, RECENT_ITEMS, dim), np.float32)  # ring buffer of reviewed items
        self.recent_seen = np.zeros((n_users, RECENT_ITEMS), bool)
        self.recent_next = np.zeros(n_users, np.int64)
        self.session_engaged = np.zeros((n_users, dim), np.float64)
        self.session_n_engaged = np.zeros(n_users, np.float64)
        self.since_engaged = np.zeros(n_users, np.float64)  # turns without an engagement, this session
        self.familiarity = np.zeros((n_users, 4), np.float64)  # decaying sums: engaged, n, skipped, n

    def reset(self, rows: np.ndarray | None = None) -> None:
        """Forget users `rows` (all when None): a new episode, a new user."""
        at = slice(None) if rows is None else np.asarray(rows)
        for state in (self.engaged, self.skipped, self.n_engaged, self.recent, self.recent_seen, self.recent_next,
                      self.familiarity, self.taste, self.taste_weight, self.taste_order, self.taste_next):
            state[at] = 0
        self._new_session(at)

    def _new_session(self, at: Any) -> None:
        self.session_engaged[at] = 0.0
        self.session_n_engaged[at] = 0.0
        self.since_engaged[at] = 0.0
        for state in (self.intent_kind, self.intent_named, self.intent_related, self.intent_quality):
            state[at] = 0

    def update(self, observation: dict[str, np.ndarray], n_new: np.ndarray, rows: np.ndarray | None = None,
               intents: Sequence[dict[str, Any] | None] | None = None) -> None:
        """Fold in the newest `n_new[j]` history rows of the batched `observation`'s row j, the
        items user `rows[j]` (all users, in order, when None) reviewed in the turn just played;
        rows with `n_new` 0 (they did not play) are left as they are, but for the session's
        state, forgotten whenever the observation opens a session (its turn is 0).

        `intents[j]` is the structured intent user `rows[j]` gave in that turn (`info["instruction_intent"]`;
        None or empty for none): it stays in force for the rest of the session, as the instruct baseline keeps
        it. Kept only with a catalog."""
        at = np.arange(len(self.engaged)) if rows is None else np.asarray(rows, dtype=np.int64)
        n_new = np.asarray(n_new, dtype=np.int64)
        reactions = observation["history_reactions"]
        h = reactions.shape[1]
        emb = embedding_part(observation["history_features"])
        new = np.arange(h)[None, :] >= h - np.minimum(n_new, h)[:, None]  # (R, H): the turn's items
        engaged, skipped = new & (reactions >= 1), new & (reactions == 0)
        played = n_new > 0
        decay = np.where(played, self.decay, 1.0)[:, None]
        emb64 = emb.astype(np.float64)
        # einsum sums each row on its own, in history order, whatever the batch around it.
        self.engaged[at] = decay * self.engaged[at] + np.einsum("rh,rhd->rd", engaged.astype(np.float64), emb64)
        self.skipped[at] = decay * self.skipped[at] + np.einsum("rh,rhd->rd", skipped.astype(np.float64), emb64)
        self.n_engaged[at] += engaged.sum(axis=1)
        # How familiar each new item was when shown: its highest similarity to the recent items before this turn.
        familiar = _max_similarity(emb, self.recent[at], self.recent_seen[at])  # (R, H)
        self.familiarity[at] = decay * self.familiarity[at] + np.stack(
            [np.where(engaged, familiar, 0.0).sum(axis=1), engaged.sum(axis=1),
             np.where(skipped, familiar, 0.0).sum(axis=1), skipped.sum(axis=1)], axis=1)
        for j in range(h):  # the turn's items into each row's ring buffer, oldest first
            rows_j = np.flatnonzero(new[:, j])
            slot = self.recent_next[at[rows_j]] % RECENT_ITEMS
            self.recent[at[rows_j], slot] = emb[rows_j, j]
            self.recent_seen[at[rows_j], slot] = True
            self.recent_next[at[rows_j]] += 1
            if self.catalog is not None:  # and its engaged items into the taste's
                rows_j = np.flatnonzero(engaged[:, j])
                users, slot = at[rows_j], self.taste_next[at[rows_j]] % TASTE_ITEMS
                self.taste[users, slot] = emb[rows_j, j]
                self.taste_weight[users, slot] = TASTE_WEIGHT[reactions[rows_j, j]]
                self.taste_order[users, slot] = self.taste_next[users]
                self.taste_next[users] += 1
        if self.catalog is not None and intents is not None:
            self._hear(at, intents)
        self.session_engaged[at] += np.einsum("rh,rhd->rd", engaged.astype(np.float64), emb64)
        self.session_n_engaged[at] += engaged.sum(axis=1)
        self.since_engaged[at] = np.where(engaged.any(axis=1), 0.0, self.since_engaged[at] + played)
        self._new_session(at[observation["context"][:, 2] == 0])

    def _hear(self, at: np.ndarray, intents: Sequence[dict[str, Any] | None]) -> None:
        """Put each row's new structured intent in force (rows without one keep theirs)."""
        assert self.catalog is not None
        for row, intent in zip(at.tolist(), intents):
            if not intent:
                continue
            self.intent_kind[row] = 1 + INTENT_KINDS.index(intent["kind"])
            self.intent_named[row] = False
            self.intent_named[row, [self.catalog.topic_index(t) for t in intent["topics"]]] = True
            self.intent_related[row] = False
            self.intent_related[row, [self.catalog.topic_index(t) for t in intent.get("related", [])]] = True
            self.intent_quality[row] = intent.get("attributes", {}).get("quality") == "high"

    def augment(self, observation: dict[str, np.ndarray], rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """`observation` (batched, row j = user `rows[j]`) with `PROFILE_KEYS` added: the unit
        engaged and skipped profiles (zeros before any), the engaged count, the session block's state,
        and, with a catalog, the intent block's (the unit taste, each candidate's signed named-topic and
        related-topic membership, the intent's kind and quality and whether there is a taste)."""
        at = slice(None) if rows is None else np.asarray(rows, dtype=np.int64)
        fam = self.familiarity[at]
        mean_familiarity = np.divide(fam[:, [0, 2]], fam[:, [1, 3]], out=np.zeros((len(fam), 2)),
                                     where=fam[:, [1, 3]] > 0)
        session = np.stack([np.tanh(self.since_engaged[at] / 5.0), np.tanh(self.session_n_engaged[at] / 3.0)], axis=1)
        shown = {**observation, "engaged_profile": _unit(self.engaged[at]),
                 "skipped_profile": _unit(self.skipped[at]), "episode_engaged": self.n_engaged[at].astype(np.float32),
                 "recent_items": self.recent[at], "recent_seen": self.recent_seen[at],
                 "session_profile": _unit(self.session_engaged[at]),
                 "session_state": np.concatenate([session, mean_familiarity], axis=1).astype(np.float32)}
        if self.catalog is not None:
            shown.update(self._intent_block(observation, at))
        return shown

    def _intent_block(self, observation: dict[str, np.ndarray], at: Any) -> dict[str, np.ndarray]:
        assert self.catalog is not None
        # The taste as greedy keeps it: reaction weight x TASTE_RECENCY per engaged item since, row by row.
        age = (self.taste_next[at] - 1)[:, None] - self.taste_order[at]
        weights = self.taste_weight[at] * TASTE_RECENCY ** age.astype(np.float64)
        taste = np.einsum("rk,rkd->rd", weights, self.taste[at].astype(np.float64))
        kind = self.intent_kind[at]
        topics = self.catalog.topic[np.asarray(observation["candidate_ids"], dtype=np.int64)]  # (B, C)
        named = np.take_along_axis(self.intent_named[at], topics, axis=1)
        related = np.take_along_axis(self.intent_related[at], topics, axis=1)
        signed = np.where(named, np.where(kind == 1, 1.0, -1.0)[:, None], 0.0)
        state = np.stack([kind == 1, kind == 2, kind == 3, self.intent_quality[at], self.taste_next[at] > 0], axis=1)
        return {"taste_profile": _unit(taste), "intent_topics": np.stack([signed, related], axis=-1).astype(np.float32),
                "intent_state": state.astype(np.float32)}


def _max_similarity(emb: np.ndarray, others: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(B, N) highest cosine of each of `emb` (B, N, D) to the `valid` (B, M) rows of `others` (B, M, D); 0 for none."""
    sims = emb @ others.swapaxes(-1, -2)  # (B, N, M), row by row
    top = np.where(valid[:, None, :], sims, -np.inf).max(axis=-1, initial=-np.inf)
    return np.where(valid.any(axis=1, keepdims=True), top, 0.0).astype(np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit norm; zero rows stay zero."""
    norm = np.sqrt(np.einsum("rd,rd->r", vectors, vectors))[:, None]
    return np.divide(vectors, norm, out=np.zeros_like(vectors), where=norm > 0).astype(np.float32)


def user_relative_features(observation: dict[str, np.ndarray], features: FeatureSet = EPISODE) -> np.ndarray:
    """The float32 `features` `UserRelativeObservation` shows the policy (see the module table).

    Takes one observation (`candidate_features` of shape (C, F)) and returns a flat vector,
    or a batch (B, C, F) and returns (B, n_features). The single case is the batch of one,
    so a user's features are bit for bit the same alone or in a vector env. The episode
    profile columns read `PROFILE_KEYS` (`EpisodeProfile.augment`); an observation without
    them is treated as a user with no profile yet (zeros)."""
    if observation["candidate_features"].ndim == 2:
        return user_relative_features({key: np.asarray(value)[None] for key, value in observation.items()},
                                      features)[0]
    cand = observation["candidate_features"]  # (B, C, F)
    layout = FeatureLayout.from_width(cand.shape[-1])
    emb = cand[..., layout.embedding]
    reactions = observation["history_reactions"]  # (B, H)
    instruction = observation["instruction"]
    # (B, C, H); padding rows are zeros. Row by row the same BLAS product as one (C, D) @ (D, H).
    sims = emb @ observation["history_features"][..., layout.embedding].swapaxes(-1, -2)
    engaged, skipped, seen = reactions >= 1, reactions == 0, reactions >= 0
    repetition = np.where(seen[:, None, :], sims, -np.inf).max(axis=-1, initial=-np.inf)
    b, d = len(cand), emb.shape[-1]
    zeros = np.zeros((b, d), np.float32)
    engaged_profile = observation.get("engaged_profile", zeros)
    skipped_profile = observation.get("skipped_profile", zeros)
    n_engaged = observation.get("episode_engaged", np.zeros(b, np.float32))
    columns = [
        _masked_mean(sims, engaged)[..., None],
        _masked_mean(sims, skipped)[..., None],
        np.where(seen.any(axis=1, keepdims=True), repetition, 0.0).astype(np.float32)[..., None],
        (emb @ instruction[:, 4:, None]),
        cand[..., layout.scalars],
        observation["candidate_mask"][..., None].astype(np.float32),
        (emb @ engaged_profile[:, :, None]),
        (emb @ skipped_profile[:, :, None]),
    ]
    globals_ = []
    if features == SESSION:
        columns += _session_columns(observation, emb)
        globals_.append(observation.get("session_state", np.zeros((b, 4), np.float32)))
    if features == INTENT:
        state = observation.get("intent_state", np.zeros((b, 5), np.float32))
        columns += _intent_columns(observation, cand, layout, state)
        globals_.append(state)
    per_candidate = np.concatenate(columns, axis=-1)  # (B, C, features.per_candidate)
    h = max(reactions.shape[1], 1)
    counts = (reactions[..., None] == _SHARE_ORDER).sum(axis=1)  # skip, click, like, share, padding
    shares = counts / h
    context = observation["context"]
    scale = np.array([7.0, 10.0, 10.0, 1.0], np.float32)
    clock = np.tanh(context / scale)
    profile_depth = np.tanh(np.asarray(n_engaged, np.float32) / 5.0)[:, None]
    vec = np.concatenate([per_candidate.reshape(len(cand), -1), instruction[:, :4], shares, clock, profile_depth,
                          *globals_], axis=1)
    return np.clip(vec, -1.0, 1.0).astype(np.float32)


def _session_columns(observation: dict[str, np.ndarray], emb: np.ndarray) -> list[np.ndarray]:
    """The `SESSION` block's per-candidate columns: repetition over the last `RECENT_ITEMS` reviewed items,
    the highest similarity to another available candidate (what the slate's other slots may repeat), and the
    similarity to this session's engaged profile; zeros where `EpisodeProfile.augment` added nothing."""
    b, c, d = emb.shape
    recent = observation.get("recent_items", np.zeros((b, 1, d), np.float32))
    seen = observation.get("recent_seen", np.zeros((b, 1), bool))
    available = observation["candidate_mask"].astype(bool)
    others = emb @ emb.swapaxes(-1, -2)  # (B, C, C)
    others = np.where(available[:, None, :] & ~np.eye(c, dtype=bool)[None], others, -np.inf).max(axis=-1)
    session = observation.get("session_profile", np.zeros((b, d), np.float32))
    return [_max_similarity(emb, recent, seen)[..., None],
            np.where(np.isfinite(others), others, 0.0).astype(np.float32)[..., None],
            emb @ session[:, :, None]]


def _intent_columns(observation: dict[str, np.ndarray], cand: np.ndarray, layout: FeatureLayout,
                    state: np.ndarray) -> list[np.ndarray]:
    """The `INTENT` block's per-candidate columns: named-topic membership signed by the intent's kind,
    related-topic membership, quality when the intent asked for it, the cosine to the taste, and the instruct
    baseline's score / 3 (taste cosine, popularity before any taste, plus those three); zeros where
    `EpisodeProfile.augment` added nothing."""
    b, c, _ = cand.shape
    emb = cand[..., layout.embedding]
    topics = observation.get("intent_topics", np.zeros((b, c, 2), np.float32))
    named, related = topics[..., 0:1], topics[..., 1:2]
    quality = cand[..., layout.column("quality"), None] * state[:, None, 3:4]
    taste = emb @ observation.get("taste_profile", np.zeros((b, emb.shape[-1]), np.float32))[:, :, None]
    relevance = np.where(state[:, None, 4:5] > 0, taste, cand[..., layout.column("log_popularity"), None])
    return [named, related, quality, taste, (relevance + named + related + quality) / np.float32(3.0)]


#: History reaction codes in the order of the share features: skip, click, like, share, padding.
_SHARE_ORDER = np.array([0, 1, 2, 3, -1])


def _masked_mean(sims: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """(B, C) mean of `sims` (B, C, H) over each row's `selected` (B, H) history items, 0 for none.

    The sum runs one history item after another (a cumulative sum, unselected items adding
    exactly 0), the order the single-user version has always summed in."""
    total = np.cumsum(np.where(selected[:, None, :], sims, np.float32(0.0)), axis=-1)[..., -1]
    n = selected.sum(axis=1).astype(np.float32)[:, None]
    return np.divide(total, n, out=np.zeros_like(total), where=n > 0)


def slate_action_mask(candidate_mask: np.ndarray, slate_size: int) -> np.ndarray:
    """float32 (K * C,): the candidate mask (C,) once per slot, matching `MultiDiscrete([C] * K)`
    logits; a batch of masks (B, C) gives (B, K * C)."""
    return np.tile(candidate_mask.astype(np.float32), slate_size)


def user_relative_observation(
    observation: dict[str, np.ndarray], slate_size: int, action_mask: bool = True, feature_set: FeatureSet = EPISODE
) -> np.ndarray | dict[str, np.ndarray]:
    """What both wrappers show the policy for one raw observation or a batch of them."""
    features = user_relative_features(observation, feature_set)
    if not action_mask:
        return features
    return {"action_mask": slate_action_mask(observation["candidate_mask"], slate_size), "observations": features}


def _candidate_space(raw: spaces.Space[Any]) -> spaces.Box:
    """The `candidate_features` Box of RecoWorld's Dict observation `raw`; one clear error for any other space."""
    box = raw.spaces.get("candidate_features") if isinstance(raw, spaces.Dict) else None
    if not isinstance(box, spaces.Box):
        raise ConfigError(f"UserRelativeObservation expects RecoWorld's Dict observation, got {raw}")
    return box


def user_relative_space(
    raw: spaces.Space[Any], action: spaces.Space[Any], action_mask: bool = True, feature_set: FeatureSet = EPISODE
) -> tuple[spaces.Space[Any], int]:
    """The policy's (single-user) observation space for RecoWorld's `raw` Dict observation and
    slate `action` space, and the slate size."""
    candidates = _candidate_space(raw)
    if not isinstance(action, spaces.MultiDiscrete):
        raise ConfigError(f"UserRelativeObservation expects a MultiDiscrete slate action, got {action}")
    n_candidates = int(candidates.shape[0])
    slate_size = int(action.shape[0])
    features = spaces.Box(-1.0, 1.0, (feature_set.width(n_candidates),), np.float32)
    if not action_mask:
        return features, slate_size
    mask = spaces.Box(0.0, 1.0, (slate_size * n_candidates,), np.float32)
    return spaces.Dict({"action_mask": mask, "observations": features}), slate_size


def intent_catalog(features: FeatureSet, env: Any) -> Catalog | None:
    """The catalog an `EpisodeProfile` needs for `features`: `env`'s (its items' topics) for `INTENT`, else None."""
    if features != INTENT:
        return None
    catalog = getattr(env, "catalog", None)
    if not isinstance(catalog, Catalog):
        raise ConfigError(f"features: intent reads the candidates' topics from the env's catalog; {env} has none")
    return catalog


def reviewed_count(reactions: np.ndarray) -> np.ndarray:
    """Items reviewed per user in a turn, from its reactions (..., K): everything not UNSEEN."""
    return (np.asarray(reactions) != UNSEEN).sum(axis=-1)


class UserRelativeObservation(gym.Wrapper[Any, Any, Any, Any]):
    """Replace the raw `Dict` observation by compact user-relative features (see module docstring).

    It keeps the user's `EpisodeProfile`: forgotten at `reset`, fed after every `step` with
    the items the user just reviewed (`info["reactions"]` says how many).

    Args:
        env: a `RecoWorld-v0` env (or a wrapper around one) with the standard `Dict` observation.
        action_mask: also expose a per-slot action mask, as `Dict(action_mask, observations)`.
        features: the feature set (`EPISODE`, `SESSION` with the session block, or `INTENT` with the intent block).

    Example:
        >>> import gymnasium as gym
        >>> env = UserRelativeObservation(gym.make("RecoWorld-v0", slate_size=3, n_candidates=10))
        >>> obs, info = env.reset(seed=0)
        >>> obs["action_mask"].shape, obs["observations"].shape
        ((30,), (114,))
    """

    def __init__(self, env: gym.Env[Any, Any], action_mask: bool = True, features: FeatureSet = EPISODE) -> None:
        super().__init__(env)
        self.observation_space, self.slate_size = user_relative_space(env.observation_space, env.action_space,
                                                                      action_mask, features)
        self.action_mask = action_mask
        self.features = features
        dim = FeatureLayout.from_width(_candidate_space(env.observation_space).shape[-1]).embedding_dim
        self.profile = EpisodeProfile(1, dim, catalog=intent_catalog(features, env.unwrapped))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.profile.reset()
        return self.observation(obs), info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.profile.update({k: np.asarray(v)[None] for k, v in obs.items()}, reviewed_count(info["reactions"])[None],
                            intents=[info.get("instruction_intent")])
        return self.observation(obs), reward, terminated, truncated, info

    def observation(self, observation: dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        """The features of a raw observation, with this user's current episode profile."""
        batched = self.profile.augment({k: np.asarray(v)[None] for k, v in observation.items()})
        shown = user_relative_observation(batched, self.slate_size, self.action_mask, self.features)
        return {k: v[0] for k, v in shown.items()} if isinstance(shown, dict) else shown[0]


class UserRelativeVectorObservation(VectorWrapper):
    """`UserRelativeObservation` for a vector env (e.g. `RecoWorldVectorEnv`): the same features
    and mask for each user, computed for all users in one batched call, and one `EpisodeProfile`
    row per user. With Gymnasium's NEXT_STEP autoreset a user whose episode ended on one step
    starts a new one on the next: its profile is forgotten then.

    Example:
        >>> import gymnasium as gym
        >>> envs = UserRelativeVectorObservation(gym.make_vec(
        ...     "RecoWorld-v0", num_envs=4, vectorization_mode="vector_entry_point", slate_size=3, n_candidates=10))
        >>> obs, info = envs.reset(seed=0)
        >>> obs["action_mask"].shape, obs["observations"].shape
        ((4, 30), (4, 114))
    """

    def __init__(self, env: VectorEnv[Any, Any, Any], action_mask: bool = True,
                 features: FeatureSet = EPISODE) -> None:
        super().__init__(env)
        self.single_observation_space, self.slate_size = user_relative_space(
            env.single_observation_space, env.single_action_space, action_mask, features)
        self.observation_space = batch_space(self.single_observation_space, env.num_envs)
        self.action_mask = action_mask
        self.features = features
        dim = FeatureLayout.from_width(_candidate_space(env.single_observation_space).shape[-1]).embedding_dim
        self.profile = EpisodeProfile(env.num_envs, dim, catalog=intent_catalog(features, env.unwrapped))
        self._restarting = np.zeros(env.num_envs, dtype=bool)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        # VectorEnv.reset's stub takes one int; vector envs (and VectorWrapper.reset) take one seed per user.
        obs, info = self.env.reset(seed=seed, options=options)  # type: ignore[arg-type]
        mask = (options or {}).get("reset_mask")
        rows = None if mask is None else np.flatnonzero(mask)
        self.profile.reset(rows)
        if rows is None:
            self._restarting[:] = False
        else:
            self._restarting[rows] = False
        return self.observations(obs), info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        restarted = self._restarting.copy()
        played = np.zeros(self.num_envs, dtype=np.int64)
        intents: list[dict[str, Any] | None] = [None] * self.num_envs
        if "reactions" in info:
            stepped = np.asarray(info.get("_reactions", np.ones(self.num_envs, dtype=bool)), dtype=bool)
            played = np.where(stepped & ~restarted, reviewed_count(info["reactions"]), 0)
            if "instruction_intent" in info:
                said = np.asarray(info.get("_instruction_intent", stepped), dtype=bool) & stepped & ~restarted
                intents = [info["instruction_intent"][i] if said[i] else None for i in range(self.num_envs)]
        self.profile.reset(np.flatnonzero(restarted))
        self.profile.update(obs, played, intents=intents)
        self._restarting = np.asarray(terminated | truncated, dtype=bool)
        return self.observations(obs), reward, terminated, truncated, info

    def observations(self, observations: dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        """The features of a batch of raw observations, with every user's current episode profile."""
        return user_relative_observation(self.profile.augment(observations), self.slate_size, self.action_mask,
                                         self.features)
