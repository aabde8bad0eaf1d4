"""Transfer: does a simulated world order recommenders the way the real users' future does?

Every verdict RecoWorld gives is about recommenders, so the one property users rely on is
that the simulator ranks recommenders as reality does. The protocol (Ji et al., TOIS 2023,
on why the cutoff must be global):

1. **One cutoff.** The log is split at one time (`recoworld.data.split`, `global`). The
   panel (`recoworld.agents.log_rankers`) and every simulated world are fitted on the past only.
2. **Users.** Everyone with interactions on both sides of the cutoff and at least one new
   item after it. Users seen only after the cutoff are counted as cold-start, users whose
   future repeats their past are counted too; neither is dropped silently.
3. **Real score.** Each recommender's top-`k` unseen items for each user, against the
   items the user really took after the cutoff: NDCG@k and Recall@k.
4. **Simulated score.** The same recommenders serve the same users in a world built from
   the past (`World`, its candidates replaced by the recommender's own ranking, items
   consumed or shown in the last `exclude_recent` slates skipped), for the length of the
   real future (capped). The headline is what users take from the slates they are shown:
   consumptions per impression (CTR), each user's own, then averaged. NDCG@k reads the
   quality of a ranked slate, not how often its user comes back, and a log's future does not
   say how a recommender changed the users' returns (its users met another recommender). So
   consumptions per user, positive reactions and retention, which also carry the world's
   return dynamics (not identified by a log), are reported beside it with their own rank
   agreement, never as the headline. Every recommender meets the same simulated users with the
   same random streams.
5. **Agreement.** Spearman's rho and Kendall's tau between the recommenders' mean real
   and mean simulated scores, with 95% intervals from a bootstrap over users (the same
   resampled users on both sides).

The default panel is the log-trained one. RecoWorld's own heuristics (`greedy`, `diverse`)
can join by name, but they rank with the world's item embeddings, the very space its
simulated users choose in: on the reference log (before issue 27's default-world changes)
`greedy` had the best simulated CTR of eleven recommenders and the seventh best real NDCG.

The world plays each recommender's ranking as fixed at the cutoff, exactly as the real
score reads it, so the two sides differ only in who reacts: the real users' future, or
the simulated users.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from rich.table import Table

from recoworld import seeding
from recoworld.agents.log_rankers import PANEL, LogRanker, TrainLog, make_ranker
from recoworld.catalog import Catalog
from recoworld.config import StrictModel, WorldConfig, build
from recoworld.data.split import Split
from recoworld.envs.retrieval import CandidateRetriever
from recoworld.envs.world import World, build_users
from recoworld.errors import ConfigError, check_distinct
from recoworld.mindset import UNSEEN, ReactionType
from recoworld.population import UserProfile
from recoworld.stats import bootstrap_indices, mean_ci, percentile_ci
from recoworld.streams import UserStreams

SECONDS_PER_DAY = 86400.0
#: The real and simulated statistic whose rank agreement is the headline.
REAL_SCORE, SIM_SCORE = "ndcg", "ctr"


class TransferConfig(StrictModel):
    """What `recoworld transfer` compares."""

    panel: list[str] = Field(default_factory=lambda: list(PANEL), min_length=3,
                             description="recommenders of the panel: `recoworld.agents.log_rankers.PANEL`, or "
                             "RecoWorld recommenders by name or reference (`greedy`, `module:Class`, ...)")
    k: int = Field(10, ge=1, le=100, description="slate size and the cutoff of NDCG@k / Recall@k")
    max_users: int | None = Field(None, ge=2, description="judge at most N eligible users (drawn with the seed)")
    days: float | None = Field(None, gt=0, description="simulated horizon; default: the log's future, capped")
    max_days: float = Field(60.0, gt=0, description="cap of the default horizon")
    bootstrap: int = Field(1000, ge=10, description="bootstrap resamples of users behind the intervals")
    seed: int = Field(0, ge=0)

    @field_validator("panel")
    @classmethod
    def _known(cls, panel: list[str]) -> list[str]:
        from recoworld.agents import check_recommender_names

        check_distinct(panel, "panel recommender")
        others = [p for p in panel if p not in PANEL]
        try:
            check_recommender_names(others)
            panel_labels(panel)
        except ConfigError as err:
            raise ValueError(f"{err}; the log-trained panel is {', '.join(PANEL)}") from None
        return panel


@dataclass(frozen=True)
class SimulatedWorld:
    """A world to judge: its config, the catalog it runs on (the log's items) and its users by id.

    `judged` restricts its agreement to some users (None: every panel user): a world whose representation
    was learned from one half of the users is judged on the other half only (the circularity check)."""

    name: str
    world: WorldConfig
    catalog: Catalog
    profiles: Sequence[UserProfile]
    judged: frozenset[str] | None = None


@dataclass
class PanelUsers:
    """Who the panel is judged on, and who was left out and why."""

    user_ids: list[str]
    codes: np.ndarray  # rows of the panel's user index
    future: list[np.ndarray]  # catalog rows each user took after the cutoff, not taken before
    counts: dict[str, int]  # test users, judged, cold-start, no new items, not drawn


@dataclass
class TransferResult:
    per_user: pd.DataFrame  # one row per (world, recommender, user): real and simulated scores
    table: pd.DataFrame  # one row per (world, recommender): means and 95% CIs
    agreement: dict[str, dict[str, Any]]  # per world: spearman, kendall and their CIs
    users: PanelUsers
    horizon_days: float
    cutoff: float
    notes: list[str] = field(default_factory=list)


def panel_users(split: Split, item_index: pd.Index, max_users: int | None, seed: int) -> PanelUsers:
    """Users with a past and a new future (module docstring, step 2), in natural id order."""
    if split.cutoff is None:
        raise ConfigError("transfer needs a global time split (one cutoff for everyone); a per-user split lets "
                          "the recommenders learn from interactions after the users' held-out ones")
    train, test = split.train, split.test
    past = train.groupby("user_id")["item_id"].agg(set)
    future = test.groupby("user_id")["item_id"].agg(lambda s: list(dict.fromkeys(s)))
    ids, fut = [], []
    cold = no_new = 0
    for uid in sorted(future.index, key=lambda s: (len(s), s)):
        if uid not in past.index:
            cold += 1
            continue
        new = [i for i in future[uid] if i not in past[uid]]
        if not new:
            no_new += 1
            continue
        ids.append(uid)
        fut.append(item_index.get_indexer(new).astype(np.int64))
    judged = len(ids)
    if max_users is not None and judged > max_users:
        keep = np.sort(np.random.default_rng(seed).choice(judged, max_users, replace=False))
        ids, fut = [ids[i] for i in keep], [fut[i] for i in keep]
    if len(ids) < 2:
        raise ConfigError(f"transfer: only {len(ids)} user(s) have interactions on both sides of the cutoff with "
                          "new items after it; lower --test-fraction or use a longer log")
    counts = {"test_users": len(future), "judged": len(ids), "cold_start": cold, "no_new_items": no_new,
              "not_drawn": judged - len(ids)}
    return PanelUsers(ids, np.zeros(0, dtype=np.int64), fut, counts)


def ranked_items(ranker: LogRanker, codes: np.ndarray, seen: Any, chunk: int = 256) -> np.ndarray:
    """(U, N) int32 catalog rows in the ranker's order for each user; items the user had are ranked last."""
    out = []
    for start in range(0, len(codes), chunk):
        part = codes[start:start + chunk]
        scores = np.asarray(ranker.scores(part), dtype=np.float64)
        scores[np.asarray(seen[part].todense(), dtype=bool)] = -np.inf
        out.append(np.argsort(-scores, axis=1, kind="stable").astype(np.int32))
    return np.concatenate(out)


def real_scores(order: np.ndarray, future: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per user (NDCG@k, Recall@k) of the top-k of `order` against the user's future items."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ndcg, recall = np.zeros(len(future)), np.zeros(len(future))
    for u, items in enumerate(future):
        hits = np.isin(order[u, :k], items)
        ndcg[u] = (hits * discounts).sum() / discounts[: min(len(items), k)].sum()
        recall[u] = hits.sum() / len(items)
    return ndcg, recall


class RankedRetriever(CandidateRetriever):
    """The platform's candidates are one recommender's ranking: the first `n_candidates` items of each user's
    order that the user has not consumed and was not shown in the last `exclude_recent` items."""

    def __init__(self, catalog: Catalog, world: WorldConfig, orders: np.ndarray) -> None:
        super().__init__(catalog, world.retrieval, world.n_candidates)
        self.orders = orders
        self.recent = np.full((len(orders), max(world.retrieval.exclude_recent, 1)), -1, dtype=np.int64)
        self.cursor = np.zeros(len(orders), dtype=np.int64)
        self.consumed: np.ndarray | None = None

    def retrieve(self, history_items: np.ndarray, history_reactions: np.ndarray, streams: UserStreams,
                 rows: np.ndarray, unavailable: np.ndarray | None = None, instructions: Any = None,
                 tastes: Any = None) -> np.ndarray:
        if self.consumed is None:
            raise RuntimeError("RankedRetriever.consumed must be bound to the world's consumption before use")
        out = np.empty((len(rows), self.n), dtype=np.int64)
        depth = self.recent.shape[1]
        for j, r in enumerate(np.asarray(rows).tolist()):
            blocked = self.consumed[r].copy()
            recent = self.recent[r]
            blocked[recent[recent >= 0]] = True
            order = self.orders[r]
            free = order[~blocked[order]]
            if len(free) < self.n:  # everything was shown lately: start over on the user's order
                free = order[~self.consumed[r][order]]
                free = np.concatenate([free, order])[: self.n] if len(free) < self.n else free
            out[j] = free[: self.n]
            at = (self.cursor[r] + np.arange(self.n)) % depth
            self.recent[r, at] = out[j]
            self.cursor[r] = (self.cursor[r] + self.n) % depth
        return out


def simulated_scores(world: SimulatedWorld, user_ids: Sequence[str], orders: np.ndarray, horizon_days: float,
                     k: int, seed: int) -> dict[str, np.ndarray]:
    """Per user over `horizon_days`: CTR (consumptions per reviewed item), consumptions (clicks), positive
    reactions, retention and sessions."""
    by_id = {p.user_id: p for p in world.profiles}
    missing = [u for u in user_ids if u not in by_id]
    if missing:
        raise ConfigError(f"world {world.name!r} has no profile for user(s) {', '.join(missing[:5])}: build it from "
                          "the same log and split")
    profiles = [by_id[u] for u in user_ids]
    b = len(profiles)
    cfg = build(WorldConfig, f"{world.name} world (transfer)", world.world, slate_size=k, n_candidates=k,
                horizon_days=horizon_days, max_steps=max(world.world.max_steps, 100_000))
    retriever = RankedRetriever(world.catalog, cfg, orders)
    sim = World(world.catalog, cfg, build_users(world.catalog, cfg, b), b, retriever=retriever)
    retriever.consumed = sim.consumed
    sim.streams = UserStreams.spawn(seeding.rng(seed, seeding.TRANSFER_USERS), b)
    sim.reset(np.arange(b), profiles, np.zeros(b))
    clicks, positive, seen = np.zeros(b), np.zeros(b), np.zeros(b)
    active = np.ones(b, dtype=bool)
    actions = np.tile(np.arange(k, dtype=np.int64), (b, 1))
    while active.any():
        rows = np.flatnonzero(active)
        batch = sim.step(actions[: len(rows)], rows)
        clicks[rows] += (batch.reactions >= ReactionType.CLICK).sum(axis=1)
        positive[rows] += (batch.reactions >= ReactionType.LIKE).sum(axis=1)
        seen[rows] += (batch.reactions != UNSEEN).sum(axis=1)
        active[rows[batch.terminated | batch.truncated]] = False
    stats = [sim.episode_stats(r) for r in range(b)]
    return {"consumptions": clicks, "positive": positive, "ctr": clicks / np.maximum(seen, 1.0),
            "retention": np.array([s["retention"] for s in stats]),
            "sessions": np.array([s["sessions"] for s in stats])}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (ties in either ranking count as neither concordant nor discordant)."""
    i, j = np.triu_indices(len(a), 1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    denom = np.sqrt((da != 0).sum() * (db != 0).sum())
    return float((da * db).sum() / denom) if denom else float("nan")


def rank_agreement(real: np.ndarray, sim: np.ndarray, resamples: int, seed: int) -> dict[str, Any]:
    """Spearman and Kendall between per-recommender means of (users x recommenders) score matrices,
    with 95% percentile intervals from resampling users (rows) with replacement."""
    rng = seeding.rng(seed, seeding.TRANSFER_BOOTSTRAP)
    rho, tau = _spearman(real.mean(0), sim.mean(0)), _kendall(real.mean(0), sim.mean(0))
    boot_rho, boot_tau = np.empty(resamples), np.empty(resamples)
    n = len(real)
    for t, pick in enumerate(bootstrap_indices(rng, n, resamples)):
        r, s = real[pick].mean(0), sim[pick].mean(0)
        boot_rho[t], boot_tau[t] = _spearman(r, s), _kendall(r, s)
    return {"spearman": rho, "spearman_ci": list(percentile_ci(boot_rho)), "kendall": tau,
            "kendall_ci": list(percentile_ci(boot_tau)),
            "n_recommenders": int(real.shape[1]), "n_users": int(n)}


def panel_labels(panel: Sequence[str]) -> list[str]:
    """What the transfer table calls each panel member: a log-trained ranker by its `PANEL` name, a RecoWorld
    recommender as every run labels it (`agent_labels`: a plug-in by its class's `name`). A plug-in labelled
    like a log-trained ranker (`random`, `popularity`, ...) is a `ConfigError` naming both, since their rows
    would be read as one recommender's."""
    from recoworld.agents import agent_labels

    others = [name for name in panel if name not in PANEL]
    labels = dict(zip(others, agent_labels(others)))
    for name, label in labels.items():
        if label.lower() in PANEL:
            raise ConfigError(f"panel recommender {name!r} is named {label!r} (its class's `name`), as is the "
                              f"log-trained panel ranker {label!r}; give the class another `name`")
    return [labels.get(name, name) for name in panel]


def run_transfer(
    split: Split, catalog: Catalog, item_genres: list[list[str]], worlds: Sequence[SimulatedWorld],
    config: TransferConfig, progress: Callable[[str], None] | None = None,
) -> TransferResult:
    """The whole protocol (module docstring) for the panel of `config` and each of `worlds`. `catalog` is the
    log's items built from the past: RecoWorld recommenders of the panel rank with its item features."""
    say = progress or (lambda _msg: None)
    item_index = pd.Index(list(catalog.item_ids))
    rankers = [make_ranker(name, config.seed, catalog) for name in config.panel]  # bad names fail before work
    labels = panel_labels(config.panel)
    for w in worlds:
        if list(w.catalog.item_ids) != list(item_index):
            raise ConfigError(f"world {w.name!r}: its catalog is not the log's items in the log's order")
    users = panel_users(split, item_index, config.max_users, config.seed)
    user_index = pd.Index(sorted(split.train["user_id"].unique(), key=lambda s: (len(s), s)))
    users.codes = user_index.get_indexer(users.user_ids).astype(np.int64)
    log = TrainLog.from_frame(split.train, user_index, item_index, item_genres, float(split.cutoff or 0.0))
    seen = log.matrix()
    last = float(split.test["timestamp"].max())
    horizon = config.days or min(max((last - log.cutoff) / SECONDS_PER_DAY, 1.0), config.max_days)

    rows: list[pd.DataFrame] = []
    for name, ranker in zip(labels, rankers):
        say(f"training {name} on the past")
        ranker.fit(log)
        order = ranked_items(ranker, users.codes, seen)
        ndcg, recall = real_scores(order, users.future, config.k)
        for w in worlds:
            pick = np.array([w.judged is None or u in w.judged for u in users.user_ids])
            if pick.sum() < 2:
                raise ConfigError(f"world {w.name!r}: fewer than 2 panel users among those it may be judged on")
            ids = [u for u, keep in zip(users.user_ids, pick) if keep]
            say(f"{name}: {len(ids)} simulated users in the {w.name} world for {horizon:.0f} days")
            sim = simulated_scores(w, ids, order[pick], horizon, config.k, config.seed)
            rows.append(pd.DataFrame({"world": w.name, "recommender": name, "user_id": ids,
                                      "ndcg": ndcg[pick], "recall": recall[pick], **sim}))
    say(f"rank agreement of each world with the real future ({config.bootstrap} bootstrap resamples)")
    per_user = pd.concat(rows, ignore_index=True)
    table_rows, agreement = [], {}
    for w in worlds:
        part = per_user[per_user["world"] == w.name]
        for name in labels:
            group = part[part["recommender"] == name]
            entry: dict[str, Any] = {"world": w.name, "recommender": name, "users": len(group)}
            for metric in ("ndcg", "recall", "ctr", "consumptions", "positive", "retention"):
                entry[metric], entry[f"{metric}_ci"] = mean_ci(group[metric])
            table_rows.append(entry)
        wide = {m: part.pivot(index="user_id", columns="recommender", values=m)[labels].to_numpy()
                for m in (REAL_SCORE, "recall", "ctr", "consumptions", "positive", "retention")}
        agreement[w.name] = rank_agreement(wide[REAL_SCORE], wide[SIM_SCORE], config.bootstrap, config.seed)
        agreement[w.name]["also"] = {
            "recall_vs_" + SIM_SCORE: _spearman(wide["recall"].mean(0), wide[SIM_SCORE].mean(0)),
            **{f"ndcg_vs_{m}": _spearman(wide[REAL_SCORE].mean(0), wide[m].mean(0))
               for m in ("ctr", "consumptions", "positive", "retention")},
        }
    for w in worlds:  # every unrestricted world also on a restricted world's users: the same users, compared
        if w.judged is None:
            continue
        for other in worlds:
            if other.judged is not None:
                continue
            part = per_user[(per_user["world"] == other.name) & per_user["user_id"].isin(w.judged)]
            real = part.pivot(index="user_id", columns="recommender", values=REAL_SCORE)[labels].to_numpy()
            sim = part.pivot(index="user_id", columns="recommender", values=SIM_SCORE)[labels].to_numpy()
            agreement[other.name][f"on the users of {w.name}"] = rank_agreement(real, sim, config.bootstrap,
                                                                             config.seed)
    notes = [f"{users.counts['cold_start']} test user(s) have no interaction before the cutoff (cold-start) and "
             f"{users.counts['no_new_items']} only repeat items they had; neither can be scored on new items, "
             "and both are left out of the panel's scores."]
    return TransferResult(per_user, pd.DataFrame(table_rows), agreement, users, float(horizon), log.cutoff, notes)


def transfer_table(result: TransferResult) -> Table:
    worlds = list(result.agreement)
    table = Table(title=f"Transfer: real future vs simulated users ({result.users.counts['judged']} users, "
                        f"{result.horizon_days:.0f} simulated days)")
    table.add_column("recommender", style="bold")
    table.add_column("real NDCG@k", justify="right")
    table.add_column("real Recall@k", justify="right")
    for w in worlds:
        table.add_column(f"{w}: CTR", justify="right")
        table.add_column(f"{w}: consumptions", justify="right")
        table.add_column(f"{w}: retention", justify="right")
    t = result.table
    for name in t["recommender"].unique():
        rows = t[t["recommender"] == name].set_index("world")
        first = rows.iloc[0]
        cells = [f"{first['ndcg']:.3f} ± {first['ndcg_ci']:.3f}", f"{first['recall']:.3f} ± {first['recall_ci']:.3f}"]
        for w in worlds:
            cells += [f"{rows.at[w, 'ctr']:.3f} ± {rows.at[w, 'ctr_ci']:.3f}", f"{rows.at[w, 'consumptions']:.1f}",
                      f"{rows.at[w, 'retention']:.3f}"]
        table.add_row(str(name), *cells)
    caption = [f"{w}: Spearman {a['spearman']:+.2f} [{a['spearman_ci'][0]:+.2f}, {a['spearman_ci'][1]:+.2f}], "
               f"Kendall {a['kendall']:+.2f} (real NDCG@k vs simulated CTR)" for w, a in result.agreement.items()]
    table.caption = "; ".join(caption)
    return table


def write_transfer(result: TransferResult, out: str | Path) -> tuple[Path, Path, Path]:
    """transfer.csv (per world and recommender), transfer.json (agreement per world), transfer.png."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recoworld.storage import write_atomic

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    csv, js, png = root / "transfer.csv", root / "transfer.json", root / "transfer.png"
    write_atomic(csv, result.table.to_csv(index=False))
    headline = next(iter(result.agreement.values()))
    doc = {**{k: headline[k] for k in ("spearman", "spearman_ci", "kendall", "kendall_ci", "n_recommenders",
                                       "n_users")},
           "world": next(iter(result.agreement)), "worlds": result.agreement, "users": result.users.counts,
           "real_score": "NDCG@k on each user's items after the cutoff",
           "simulated_score": "consumptions per impression (CTR) of the served slates",
           "horizon_days": result.horizon_days, "cutoff": result.cutoff, "notes": result.notes}
    write_atomic(js, json.dumps(doc, indent=2))
    worlds = list(result.agreement)
    fig, axes = plt.subplots(1, len(worlds), figsize=(5.5 * len(worlds), 4.5), squeeze=False)
    for ax, w in zip(axes[0], worlds):
        part = result.table[result.table["world"] == w]
        ax.errorbar(part["ndcg"], part[SIM_SCORE], xerr=part["ndcg_ci"], yerr=part[f"{SIM_SCORE}_ci"],
                    fmt="o", capsize=3)
        for _, row in part.iterrows():
            ax.annotate(str(row["recommender"]), (row["ndcg"], row[SIM_SCORE]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
        a = result.agreement[w]
        ax.set_title(f"{w} world: Spearman {a['spearman']:+.2f} [{a['spearman_ci'][0]:+.2f}, "
                     f"{a['spearman_ci'][1]:+.2f}]", fontsize=10)
        ax.set_xlabel("real: NDCG@k on the future")
        ax.set_ylabel("simulated: consumptions per impression (CTR)")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(png, buf.getvalue())
    return csv, js, png
