"""The ToolRec loop: think, call a tool, read its result, repeat, finish with a slate.

Each turn (one `act`) runs at most `max_steps` model calls (7, as in ToolRec's public
code). A step is one tool call through `ChatBackend.complete(messages, Tools(...))`:
native function calling where the server has it, the constrained JSON action schema
where it has not (`tool_calling="json"`, the local backend). What can go wrong becomes an
observation the model reads at its next step, never an exception: replies the backend
could not validate (`LLMOutputError`), bad arguments (`ToolResult.error`), finish ids that
are not among this turn's candidates (rejected `finish_retries` times, then dropped), and
calls that reproduce an earlier list or error (answered "nothing new"; past `max_repeats`
the loop stops, a RecoWorld addition: small models otherwise spend every step on one call). An
unreachable server (`LLMUnavailable`) ends the loop early. `BudgetExceeded` propagates:
it stops the study.

The slate is then merged deterministically: the model's finish ids, then the lists of
every step round-robin (latest list first, so a re-rank outranks what it re-ranked),
then the greedy relevance order, which also fills every slot if the model never
produced anything usable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from recoworld.agents.base import CatalogSearcher, Observation, Recommender
from recoworld.agents.baselines import GreedyRelevanceRecommender
from recoworld.agents.toolrec import prompts
from recoworld.agents.toolrec.tools import MAX_K, CandidatePool, SearchArgs, ToolBox, ToolResult, toolset
from recoworld.catalog import Catalog
from recoworld.catalog.embeddings import EmbeddingMethod
from recoworld.catalog.search import BadQuery
from recoworld.config import StrictModel
from recoworld.llm import ChatBackend, LLMConfig, SamplingParams, shared_backend
from recoworld.llm.errors import LLMError, LLMUnavailable

if TYPE_CHECKING:
    from recoworld.envs.search import PlatformSearch


class ToolRecConfig(StrictModel):
    """How hard ToolRec thinks per turn."""

    max_steps: int = Field(7, ge=1, le=20, description="model calls per slate (ToolRec's public code: 7)")
    history_items: int = Field(6, ge=0, le=50, description="most recent history items shown to the model")
    show_items: int = Field(8, ge=1, le=MAX_K, description="items of each earlier list shown in the scratchpad")
    finish_retries: int = Field(1, ge=0, le=5, description="times a finish with unknown ids is sent back")
    max_repeats: int = Field(
        1, ge=0, le=20, description="repeated results answered 'nothing new' before the loop stops early"
    )
    query_embedding: EmbeddingMethod = Field("tfidf", description="text encoder of the `query` attribute")
    sampling: SamplingParams = Field(
        SamplingParams(temperature=0.3, max_tokens=160),
        description="per-step sampling; the seed is drawn from the agent's rng at every call",
    )


class ToolRecRecommender(CatalogSearcher, Recommender):
    """ToolRec (Zhao et al., SIGIR 2024): an LLM surrogate of the user that calls retrieval and rank tools.

    `last_trace` holds the reasoning of the latest `act` as a JSON-serialisable list (one
    dict per step: thought, tool, arguments, result items or error; then the final slate),
    which `simulation.run_episode` logs in the trajectory's `agent_trace` column.

    With a platform search service connected (`connect_search`, done by `simulate`), the
    model also gets the `search` tool: the service admits found catalog items into the
    candidates (at most `retrieval.search_cap` per turn), the loop continues on the updated
    observation, and the trace's search steps record what was found, admitted and left out.
    """

    name = "toolrec"

    def __init__(
        self,
        slate_size: int,
        catalog: Catalog,
        llm: LLMConfig | None = None,
        seed: int | None = None,
        config: ToolRecConfig | None = None,
        backend: ChatBackend | None = None,
    ) -> None:
        super().__init__(slate_size, seed)
        self.catalog = catalog
        self.config = config or ToolRecConfig()
        self.backend = backend if backend is not None else shared_backend(llm or LLMConfig())
        self.tools = ToolBox(catalog, self.config.query_embedding)
        self.relevance = GreedyRelevanceRecommender(slate_size)
        self.spec = toolset(slate_size, catalog)
        self.last_trace: list[dict[str, Any]] | None = None
        self._instruction: tuple[str, dict[str, Any]] | None = None

    def connect_search(self, search: PlatformSearch | None) -> None:
        """Offer the model the `search` tool while a search service that admits items is connected."""
        super().connect_search(search)
        self.spec = toolset(self.slate_size, self.catalog, search.cap if search is not None else 0)

    def begin_episode(self, seed: int | None = None) -> None:
        super().begin_episode(seed)
        self._instruction = None
        self.last_trace = None

    def observe(self, reactions: np.ndarray, info: dict[str, Any]) -> None:
        """Keep the latest reflective instruction of the session; a new session starts without one."""
        if info.get("instruction"):
            self._instruction = (str(info["instruction"]), dict(info.get("instruction_intent") or {}))
        if info.get("left"):
            self._instruction = None

    # ------------------------------------------------------------------ the loop

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        cfg = self.config
        relevance = self.relevance.scores(observation)
        pool = self.tools.pool(observation["candidate_ids"], observation["candidate_mask"].astype(bool), relevance)
        steps: list[prompts.Step] = []
        lists: list[np.ndarray] = []  # candidate positions of every successful retrieve/rerank
        trace: list[dict[str, Any]] = []
        chosen: list[int] = []
        ended_by, rejected, repeats = "max_steps", 0, 0
        done: dict[str, int] = {}  # each distinct list (or error) -> the step that produced it
        for step in range(1, cfg.max_steps + 1):
            messages = prompts.messages(
                self.tools, observation, pool.items, self._instruction, steps, step, slate_size=self.slate_size,
                max_steps=cfg.max_steps, history_items=cfg.history_items, show_items=cfg.show_items,
                search=(self.search.cap, self.search.remaining) if self.search is not None else None,
            )
            params = cfg.sampling.model_copy(update={"seed": int(self.rng.integers(2**31 - 1))})
            try:
                call = self.backend.complete(messages, self.spec, params)
            except LLMError as err:
                note = f"error: your last reply was unusable ({err.reason}): {str(err)[-200:]}"
                trace.append({"step": step, "error": str(err)})
                steps.append(prompts.Step("", "(no valid tool call)", note))
                if isinstance(err, LLMUnavailable):
                    ended_by = "unavailable"
                    break
                continue
            args = call.arguments
            entry: dict[str, Any] = {"step": step, "thought": args.thought, "tool": call.name,
                                     "arguments": args.model_dump(exclude={"thought"})}
            trace.append(entry)
            if call.name == "finish":
                valid, unknown = self._resolve(args.items, pool)
                entry["dropped"] = unknown
                if unknown and rejected < cfg.finish_retries and step < cfg.max_steps:
                    rejected += 1
                    note = (f"error: ids {unknown[:8]} are not among this turn's candidates; "
                            "finish again with ids from the lists above")
                    entry["error"] = note
                    steps.append(prompts.Step(args.thought, f"finish {args.items}", note))
                    continue
                chosen, ended_by = valid, "finish"
                break
            action = f"{call.name} {args.attribute}={args.value!r} k={args.k}"
            if call.name == "retrieve":
                result = pool.retrieve(args)
            elif call.name == "rerank":
                result = pool.rerank(args, _union(lists))
            else:
                assert self.search is not None  # `search` is among the tools only with a service connected
                result, found = self._search(self.search, args, entry)
                if found is not None:  # the platform admitted items: go on with its new candidates
                    replaced = np.flatnonzero(found["candidate_ids"] != observation["candidate_ids"])
                    lists = [x[~np.isin(x, replaced)] for x in lists]  # their old items are gone
                    observation = found
                    relevance = self.relevance.scores(observation)
                    pool = self.tools.pool(observation["candidate_ids"], observation["candidate_mask"].astype(bool),
                                           relevance)
            # Weak models loop: a list (or an error) seen before adds nothing, so say so, then stop.
            key = action if result.error is not None else " ".join(map(str, result.positions))
            if key in done:
                repeats += 1
                entry["error"] = f"same result as step {done[key]}: nothing new; try another attribute or finish"
                if repeats > cfg.max_repeats:
                    ended_by = "repeat"
                    break
                steps.append(prompts.Step(args.thought, action, f"error: {entry['error']}"))
                continue
            done[key] = step
            items = pool.candidate_ids[result.positions]
            if result.error is not None:
                entry["error"] = result.error
                steps.append(prompts.Step(args.thought, action, f"error: {result.error}"))
                continue
            lists.append(result.positions)
            entry["label"], entry["items"] = result.label, items.tolist()
            steps.append(prompts.Step(args.thought, action, f"list L{len(lists)} ({result.label}): "
                                                           f"{len(items)} items", items))
        slate = self._merge(chosen, lists, relevance, observation)
        trace.append({"finish": [int(observation["candidate_ids"][p]) for p in chosen], "ended_by": ended_by,
                      "slate": observation["candidate_ids"][slate].tolist()})
        self.last_trace = trace
        return slate

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _search(search: PlatformSearch, args: SearchArgs, entry: dict[str, Any],
                ) -> tuple[ToolResult, Observation | None]:
        """One catalog search through the platform: the found items that are now candidates (as a
        list), and the new observation when the platform admitted any; the trace entry records
        what was admitted and what the cap left out. Bad arguments come back as the result's error."""
        try:
            found = search.search(args.attribute, args.value, args.k)
        except BadQuery as err:
            return ToolResult(np.empty(0, dtype=np.int64), "", f"search: {err}"), None
        entry["admitted"], entry["left_out"] = found.admitted.tolist(), found.left_out.tolist()
        label = f"search {args.attribute}={args.value.strip()}"
        positions = found.positions[found.positions >= 0]
        if not len(positions):
            return ToolResult(positions, label, "search: the platform admits no more new items this turn; "
                                                "use the lists above or finish"), None
        return ToolResult(positions, label), found.observation if len(found.admitted) else None

    def _resolve(self, ids: list[str], pool: CandidatePool) -> tuple[list[int], list[str]]:
        """Candidate positions of the ids the model wrote (catalog indices, or external item ids)."""
        by_index = {int(item): int(pos) for item, pos in zip(pool.items, pool.positions)}
        by_name = {str(self.catalog.item_ids[item]): pos for item, pos in by_index.items()}
        valid: list[int] = []
        unknown: list[str] = []
        for raw in ids:
            text = raw.strip()
            pos = by_index.get(int(text)) if text.isdigit() else by_name.get(text)
            if pos is None:
                unknown.append(raw)
            elif pos not in valid:
                valid.append(pos)
        return valid, unknown

    def _merge(
        self, chosen: list[int], lists: list[np.ndarray], relevance: np.ndarray, observation: Observation
    ) -> np.ndarray:
        """Finish ids, then every list round-robin (latest first), then greedy relevance: distinct positions."""
        out: list[int] = []
        rounds = max((len(x) for x in lists), default=0)
        latest_first = lists[::-1]
        merged = [*chosen, *(int(x[i]) for i in range(rounds) for x in latest_first if i < len(x))]
        for pos in merged:
            if pos not in out:
                out.append(pos)
        if len(out) < self.slate_size:
            rest = relevance.astype(np.float64).copy()
            rest[out] = -np.inf
            # Taken positions score -inf, so top_k's slate_size holds enough untaken ones.
            out += [int(p) for p in self.top_k(rest, observation) if int(p) not in out][: self.slate_size - len(out)]
        return np.asarray(out[: self.slate_size], dtype=np.int64)


def _union(lists: list[np.ndarray]) -> np.ndarray:
    """Every position retrieved so far, first appearance first."""
    if not lists:
        return np.empty(0, dtype=np.int64)
    joined = np.concatenate(lists)
    _, first = np.unique(joined, return_index=True)
    return joined[np.sort(first)]
