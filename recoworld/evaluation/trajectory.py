"""The trajectory table: one row per user x turn x slate position, the same for every writer.

`simulate` (and so training evaluation, which runs it), and studies log their turns through
`TrajectoryLog`, so their Parquet files have exactly the columns and types of `SCHEMA`,
in this order. A column that only one writer knows has a documented value in the other
(`arm`, `shard`, `new_item` and, in studies, `episode_seed`); docs/reference/trajectory.md's table
of columns is `COLUMNS`, and a test keeps the two the same. An env made with `expose_mindset=True`
adds `MINDSET_COLUMNS` (satisfaction, fatigue) after them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recoworld.catalog import Catalog, slate_diversity

if TYPE_CHECKING:
    from recoworld.envs.world import StepBatch, World


@dataclass(frozen=True)
class Column:
    """One column: its Arrow type, whether it varies along the slate, and what it means."""

    name: str
    type: pa.DataType
    per_slot: bool
    doc: str


COLUMNS: tuple[Column, ...] = (
    Column("recommender", pa.string(), False, "the recommender's name, as given to `simulate` or the study"),
    Column("arm", pa.string(), False, "study arm: `baseline`, or `without` / `with` a creator's items; "
           "`baseline` in `simulate`"),
    Column("shard", pa.int64(), False, "study shard (users of one shard share a platform); null in `simulate`, "
           "where every user has a world of their own"),
    Column("user_id", pa.string(), False, "the simulated user"),
    Column("segment", pa.string(), False, "the user's population segment"),
    Column("episode_seed", pa.int64(), False, "seed of the env's `reset` for this episode: one per user in "
           "`simulate`, one per shard in studies (the shard's users share one world)"),
    Column("session", pa.int64(), False, "session number, from 1"),
    Column("day", pa.int64(), False, "whole days elapsed at the end of the turn (`time_days` rounded down)"),
    Column("turn", pa.int64(), False, "turn within the session, from 1"),
    Column("step", pa.int64(), False, "turn within the episode, from 1"),
    Column("time_days", pa.float64(), False, "simulated time at the end of the turn, in days"),
    Column("turn_reward", pa.float64(), False, "the env's reward for the turn (engagement, plus the return "
           "term when the session ends)"),
    Column("instruction", pa.string(), False, "text of the instruction the user gave this turn; null if none"),
    Column("intent", pa.string(), False, "that instruction's structured intent (JSON); null if none"),
    Column("left", pa.bool_(), False, "the user left after this turn (the session ended)"),
    Column("return_gap_days", pa.float64(), False, "days until the next session when the user left and "
           "will return; null otherwise"),
    Column("churned", pa.bool_(), False, "the user left and will never come back"),
    Column("exit_reason", pa.string(), False, "why the user left: bored, irrelevant, repetitive, out_of_time, "
           "satisfied or other (`recoworld.mindset.ExitReason`); null unless the user left this turn"),
    Column("exit_text", pa.string(), False, "the user's short words on why they left; null unless they left"),
    Column("interview_score", pa.int64(), False, "end-of-session interview: satisfaction from 1 (fed up) to 5 "
           "(delighted); null unless the session ended this turn"),
    Column("interview", pa.string(), False, "the interview's one sentence; null unless the session ended this turn"),
    Column("intent_match", pa.float64(), False, "share of the slate that honours the session's latest "
           "instruction (`info['instruction_followed']`); null while none is in force"),
    Column("instruction_satisfiable", pa.bool_(), False, "the turn's candidates held enough items to honour that "
           "instruction (one for `more`, a slate for `less`/`different`); null while none is in force"),
    Column("instruction_similarity", pa.float64(), False, "mean cosine of the slate's items to that instruction's "
           "text embedding mapped into item space (`info['instruction_similarity']`); null while none is in force"),
    Column("instruction_judge", pa.float64(), False, "an LLM judge's score (0-1) of how well the slate honours "
           "that instruction (`recoworld.evaluation.judge`, `simulate --judge`); null when not judged"),
    Column("instruction_judge_reason", pa.string(), False, "the judge's one-line reason; null when not judged"),
    Column("slate_diversity", pa.float64(), False, "mean pairwise cosine distance within the slate"),
    Column("llm_fallback", pa.bool_(), False, "an LLM user's turn that the parametric user played instead"),
    Column("agent_trace", pa.string(), False, "the recommender's `last_trace` (JSON), e.g. ToolRec's reasoning; "
           "null if it keeps none"),
    Column("position", pa.int64(), True, "slate position, from 0"),
    Column("item", pa.int64(), True, "catalog row of the item shown"),
    Column("topic", pa.int16(), True, "the item's topic index"),
    Column("reaction", pa.int8(), True, "-1 unseen (the user left before it), 0 skip, 1 click, 2 like, 3 share"),
    Column("disliked", pa.bool_(), True, "the user marked the item \"not interested\" (its reaction is 0, skip)"),
    Column("dwell_min", pa.float32(), True, "minutes spent on the item"),
    Column("self_information", pa.float32(), True, "-log2 of the item's popularity (its novelty)"),
    Column("new_item", pa.bool_(), True, "a creator's item published during the study; false in `simulate`"),
    Column("searched", pa.bool_(), True, "the item entered the candidates this turn through the platform's catalog "
           "search (`recoworld.envs.search`, e.g. ToolRec's `search` tool)"),
)
SCHEMA = pa.schema([pa.field(c.name, c.type) for c in COLUMNS])
#: Appended after `COLUMNS` only when the env was made with `expose_mindset=True` (its step info
#: then carries the hidden mindset): the user's state after the turn, for the report's mindset curves.
MINDSET_COLUMNS: tuple[Column, ...] = (
    Column("satisfaction", pa.float32(), False, "the user's hidden satisfaction after the turn "
           "(only with `expose_mindset`)"),
    Column("fatigue", pa.float32(), False, "the user's hidden fatigue after the turn (only with `expose_mindset`)"),
)
_CONSTANT = ("recommender", "arm", "shard")


class TrajectoryLog:
    """Rows of one recommender's episodes (in one arm and shard), buffered column by column.

    Every writer logs through `add_step`, which reads a world step's arrays (`RecoWorldEnv.last_batch`
    in `simulate`, `PopulationParallelEnv.last_batch` in studies), so the columns are derived in one
    place and a population step needs no dict per user and turn.
    """

    def __init__(self, catalog: Catalog, recommender: str, *, arm: str = "baseline", shard: int | None = None,
                 new_items: np.ndarray | None = None) -> None:
        self.catalog = catalog
        self._constant = {"recommender": recommender, "arm": arm, "shard": shard}
        self.is_new = np.zeros(len(catalog), dtype=bool)  # (N,) the `new_item` flag of each catalog row
        if new_items is not None:
            self.is_new[new_items] = True
        self._turns: dict[str, list[Any]] = {c.name: [] for c in COLUMNS if not c.per_slot and c.name not in _CONSTANT}
        self._slots: dict[str, list[np.ndarray]] = {c.name: [] for c in COLUMNS if c.per_slot}
        self._mindset: dict[str, list[float | None]] = {c.name: [] for c in MINDSET_COLUMNS}
        self._sizes: list[int] = []  # slots of each turn logged

    def add_step(self, world: World, batch: StepBatch, episode_seed: int, traces: Sequence[Any],
                 searched: np.ndarray | None = None) -> None:
        """Every turn of one world step, row j of `batch` with the recommender's `traces[j]` and `searched[j]`
        (the slate items that entered through catalog search; none when None). What the user really said is
        logged, whatever the instruction channel showed the recommender."""
        r, k = batch.slates.shape
        rows = batch.rows.tolist()
        profiles = [world.profiles[row] for row in rows]
        instructions = batch.instructions
        gaps = batch.return_gap.tolist()
        similarity = batch.similarity.tolist() if batch.similarity is not None else [math.nan] * r
        exits = [batch.exit_reason(j) for j in range(r)]
        interviews = batch.interviews or [None] * r
        turns = {
            "user_id": [p.user_id for p in profiles], "segment": [p.segment for p in profiles],
            "episode_seed": [episode_seed] * r, "session": batch.session.tolist(), "day": batch.day.tolist(),
            "turn": batch.turn.tolist(), "step": batch.step.tolist(), "time_days": batch.time_days.tolist(),
            "turn_reward": batch.reward.tolist(),
            "instruction": [i.text if i is not None else None for i in instructions],
            "intent": [json.dumps(i.intent.model_dump()) if i is not None and i.text else None for i in instructions],
            "left": batch.left.tolist(),
            "return_gap_days": [None if math.isnan(g) or math.isinf(g) else g for g in gaps],
            "churned": [math.isinf(g) for g in gaps],
            "exit_reason": [e.kind if e is not None else None for e in exits],
            "exit_text": [e.text if e is not None else None for e in exits],
            "interview_score": [i.score if i is not None else None for i in interviews],
            "interview": [i.text if i is not None else None for i in interviews],
            "intent_match": [None if math.isnan(f) else f for f in batch.followed.tolist()],
            "instruction_satisfiable": [None if math.isnan(s) else bool(s) for s in batch.satisfiable.tolist()],
            "instruction_similarity": [None if math.isnan(s) else s for s in similarity],
            "instruction_judge": [None] * r, "instruction_judge_reason": [None] * r,
            "slate_diversity": [slate_diversity(self.catalog, slate) for slate in batch.slates],
            "llm_fallback": batch.fallback.tolist(),
            "agent_trace": [json.dumps(trace) if trace else None for trace in traces],
        }
        mindsets: list[dict[str, Any] | None] = (
            [world.users.mindset(row).model_dump() for row in rows] if world.config.expose_mindset else [None] * r)
        disliked = batch.disliked if batch.disliked is not None else np.zeros((r, k), dtype=bool)
        slots = {"reaction": batch.reactions, "disliked": disliked, "dwell_min": batch.dwell_min,
                 "searched": searched if searched is not None else np.zeros((r, k), dtype=bool)}
        self._append(turns, mindsets, batch.slates, slots)

    def _append(self, turns: dict[str, list[Any]], mindsets: Sequence[dict[str, Any] | None], slates: np.ndarray,
                slots: dict[str, np.ndarray]) -> None:
        """Turns (one list entry each), their mindsets and their (T, K) slates with the slot columns that
        come from the env; the item's own columns are looked up here, once for every writer."""
        for name, values in turns.items():
            self._turns[name].extend(values)
        for mindset in mindsets:
            for name in self._mindset:
                self._mindset[name].append(float(mindset[name]) if mindset and name in mindset else None)
        t, k = slates.shape
        items = slates.ravel()
        self._sizes.extend([k] * t)
        own = {"position": np.tile(np.arange(k), t), "item": items, "topic": self.catalog.topic[items],
               "self_information": self.catalog.self_information[items], "new_item": self.is_new[items]}
        for name, values in (own | slots).items():
            self._slots[name].append(np.asarray(values).ravel())

    def table(self) -> pa.Table:
        """The rows so far as an Arrow table of exactly `SCHEMA` (plus `MINDSET_COLUMNS` when the env exposed
        the mindset); turn columns repeat on each slot's row."""
        sizes = np.array(self._sizes, dtype=np.int64)
        rows = np.repeat(np.arange(len(sizes)), sizes)
        arrays = []
        for col in COLUMNS:
            if col.name in _CONSTANT:
                arrays.append(pa.array([self._constant[col.name]] * len(rows), type=col.type))
            elif col.per_slot:
                parts = self._slots[col.name]
                values = np.concatenate(parts) if parts else np.empty(0)
                arrays.append(pa.array(values.astype(col.type.to_pandas_dtype()), type=col.type))
            else:
                arrays.append(pa.array(self._turns[col.name], type=col.type, from_pandas=True).take(rows))
        table = pa.Table.from_arrays(arrays, schema=SCHEMA)
        if any(v is not None for v in self._mindset["satisfaction"]):
            for col in MINDSET_COLUMNS:
                table = table.append_column(pa.field(col.name, col.type),
                                            pa.array(self._mindset[col.name], type=col.type).take(rows))
        return table

    def frame(self) -> pd.DataFrame:
        """`table()` as pandas, as reading the written Parquet back gives it."""
        return self.table().to_pandas()
