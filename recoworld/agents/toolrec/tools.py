"""ToolRec's tools: attribute-conditioned retrieval and re-ranking over one turn's candidates,
and a search of the whole catalog through the platform.

`retrieve` and `rerank` work over the env's **candidate set** (the observation's
`candidate_ids`, available ones only): the action is a slate of candidate positions, and
the platform's retrieval stage plays the role of ToolRec's first-stage recall. `search`
looks beyond it: it asks the platform's catalog search (`recoworld.envs.search`), which
admits what it finds into the candidates, at most `retrieval.search_cap` items per turn,
so the slate stays a choice among candidates the platform offered. It is offered only
when the runner connected a search service (`CatalogSearcher.connect_search`).

| tool       | arguments                  | result                                                      |
|------------|----------------------------|-------------------------------------------------------------|
| `retrieve` | attribute, value, k        | the k most relevant candidates with attribute = value       |
| `rerank`   | attribute, value, k        | every list so far, matches (or a scorer's best) first, top k |
| `search`   | attribute, value, k        | the platform's k best catalog items, admitted up to the cap  |
| `finish`   | items                      | the slate: these ids, then the lists so far, then top-up    |

Attributes: `topic`, `subtopic`, `creator` (names), `duration` (short/medium/long: catalog
terciles), `popularity` (niche/mid/popular: catalog terciles; the catalog has no publish
time, so there is no recency band), `semantic_id` (a prefix such as `<a_3><b_1>`, via
`SemanticIndex`) and `query` (free text, matched through text embeddings of each item's
title, description, topic, subtopic and creator: hashed TF-IDF with the catalog's IDF by
default (`recoworld.catalog.search.ItemMatcher`, shared with the platform's search), the sentence
model with `query_embedding="sentence"`; the catalog's own embeddings are not a text
space). `rerank` also takes the scorers `relevance` (the greedy relevance recommender:
a conventional model behind a natural-language interface) and `quality`.

Within a retrieval, ties are broken by relevance, so "top-k" always means "the k this
user most likely wants among the matches". Items are named by their catalog index (the
trajectory's `item`); `finish` also accepts external `item_ids`.

Validation has two layers. The JSON schema sent to the server has one branch per
attribute (a topic must be a known topic, a band a known band, `k` in 1..20), which a
grammar-constrained decoder obeys. The pydantic models are lenient and `CandidatePool`
checks the values, because servers that ignore schemas return anything (llama.cpp
servers were seen to send k = 1307542086739161): a bad `k`, an unknown attribute or value
returns a `ToolResult` whose `error` the model reads at its next step; nothing is raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from recoworld.catalog import Catalog
from recoworld.catalog.embeddings import EmbeddingMethod
from recoworld.catalog.search import DURATION_BANDS, POPULARITY_BANDS, BadQuery, choose, item_matcher
from recoworld.catalog.semantic_ids import format_semantic_id
from recoworld.envs.search import SEARCH_FIELDS
from recoworld.llm import Tool, Tools
from recoworld.simulators.prompts import data

#: Attributes a retrieval can condition on.
ATTRIBUTES = ("topic", "subtopic", "creator", "duration", "popularity", "semantic_id", "query")
#: Scorers a re-rank can order by, besides the attributes.
SCORERS = ("relevance", "quality")
#: Largest list a tool returns; the schema says so, and `ToolBox` enforces it.
MAX_K = 20
THOUGHT_CHARS = 160


def _clip(text: Any) -> Any:
    """Long thoughts are cut, not rejected: a verbose model should not lose its action."""
    return text[:THOUGHT_CHARS] if isinstance(text, str) else text


def _as_strings(items: Any) -> Any:
    return [str(x) for x in items] if isinstance(items, list) else items


Thought = Annotated[str, BeforeValidator(_clip)]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thought: Thought = Field("", description="why this step helps the user",
                             json_schema_extra={"maxLength": THOUGHT_CHARS})


# Lenient on purpose (any str, any int): `CandidatePool` checks the values, so a bad one goes back
# to the model. Class docstrings would travel to the model as schema descriptions, hence comments.
class RetrieveArgs(_Args):
    attribute: str = Field(description="what to condition on", json_schema_extra={"enum": list(ATTRIBUTES)})
    value: str = Field(description="the attribute value: a topic name, a band, a semantic-id prefix, free text",
                       json_schema_extra={"maxLength": 60})
    k: int = Field(description="how many items", json_schema_extra={"enum": list(range(1, MAX_K + 1))})


class SearchArgs(RetrieveArgs):
    attribute: str = Field(description="what to search the catalog by",
                           json_schema_extra={"enum": list(SEARCH_FIELDS)})


class RerankArgs(RetrieveArgs):
    attribute: str = Field(description="an attribute (matches first) or a scorer (value empty)",
                           json_schema_extra={"enum": [*SCORERS, *ATTRIBUTES]})
    k: int = Field(description="how many items to keep", json_schema_extra={"enum": list(range(1, MAX_K + 1))})


# Ids stay strings (a model may write "12" or an external id); the agent resolves them.
class FinishArgs(_Args):
    items: Annotated[list[str], BeforeValidator(_as_strings)] = Field(
        default_factory=list, description="item ids for the slate, best first")


def _value_schemas(catalog: Catalog) -> dict[str, dict[str, Any]]:
    text = {"type": "string", "maxLength": 60}
    return {
        "topic": {"enum": list(catalog.topic_names)}, "subtopic": {"enum": list(catalog.subtopic_names)},
        "creator": text, "duration": {"enum": list(DURATION_BANDS)}, "popularity": {"enum": list(POPULARITY_BANDS)},
        "semantic_id": {"type": "string", "maxLength": 24}, "query": text,
    }


def _branches(model: type[_Args], values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`model`'s schema with one branch per attribute, each with its own value constraint.

    Used for the JSON action form: a grammar-constrained decoder then writes a known topic
    after `topic` and a band after `duration`. Native function calling gets the flat schema
    (OpenAI rejects `anyOf` at the root of function parameters).
    """
    flat = model.model_json_schema()
    return {
        "type": "object",
        "anyOf": [
            {"type": "object", "properties": {**flat["properties"], "attribute": {"const": name}, "value": value},
             "required": ["thought", "attribute", "value", "k"], "additionalProperties": False}
            for name, value in values.items()
        ],
    }


def toolset(slate_size: int, catalog: Catalog, search_cap: int = 0) -> Tools:
    """The tools for this catalog; `finish` is capped at `slate_size` ids so a small model cannot ramble.
    `search` is among them when the platform admits searched items (`search_cap` > 0)."""
    values = _value_schemas(catalog)
    scorers = {name: {"const": ""} for name in SCORERS}
    finish = create_model(
        "FinishArgs", __base__=FinishArgs,
        items=(Annotated[list[str], BeforeValidator(_as_strings)],
               Field(default_factory=list, description="item ids for the slate, best first",
                     json_schema_extra={"items": {"type": "integer"}, "maxItems": slate_size})),
    )
    search = (Tool("search", f"Search the whole catalog by topic, subtopic, semantic_id prefix or query; the "
                   f"platform adds up to {search_cap} new items per turn to the candidates.", SearchArgs,
                   _branches(SearchArgs, {name: values[name] for name in SEARCH_FIELDS})),) if search_cap else ()
    return Tools(
        (
            Tool("retrieve", "Retrieve the top k candidates whose attribute has the given value.", RetrieveArgs,
                 _branches(RetrieveArgs, values)),
            Tool("rerank", "Re-rank every item retrieved so far by an attribute value or a scorer; keep k.",
                 RerankArgs, _branches(RerankArgs, {**scorers, **values})),
            *search,
            Tool("finish", f"Finish with the slate: up to {slate_size} item ids, best first.", finish),
        ),
        choice="required",
    )


@dataclass
class ToolResult:
    """What a tool call produced: candidate positions and their label, or an error for the model."""

    positions: np.ndarray
    label: str
    error: str | None = None


def _fail(message: str) -> ToolResult:
    return ToolResult(np.empty(0, dtype=np.int64), "", message)


class ToolBox:
    """The tools over one catalog; `pool` binds them to one turn's candidates."""

    def __init__(self, catalog: Catalog, query_embedding: EmbeddingMethod = "tfidf") -> None:
        self.catalog = catalog
        self.matcher = item_matcher(catalog, query_embedding)

    def pool(self, candidate_ids: np.ndarray, available: np.ndarray, relevance: np.ndarray) -> CandidatePool:
        return CandidatePool(self, candidate_ids, np.flatnonzero(available), relevance)

    def describe(self, item: int) -> str:
        """One compact line per item, as the model sees it; catalog text is escaped (it is data)."""
        c = self.catalog
        return (f"{item}: \"{data(c.titles[item], 48)}\" ({data(c.topic_names[c.topic[item]])}/"
                f"{data(c.subtopic_names[c.subtopic[item]])}, {float(c.duration_min[item]):.0f} min, "
                f"by {data(c.creator_names[c.creator[item]], 40)}, {format_semantic_id(c.semantic_ids[item][:2])})")


@dataclass
class CandidatePool:
    """One turn's available candidates (`positions` into `candidate_ids`) and their relevance."""

    box: ToolBox
    candidate_ids: np.ndarray
    positions: np.ndarray
    relevance: np.ndarray  # per candidate position

    @property
    def items(self) -> np.ndarray:
        return self.candidate_ids[self.positions]

    # ------------------------------------------------------------------ the tools

    def retrieve(self, args: RetrieveArgs) -> ToolResult:
        try:
            k = self._k(args.k)
            attribute = choose(args.attribute, ATTRIBUTES, "attribute")
            score = self._match(attribute, args.value, self.positions)
        except BadQuery as err:
            return _fail(f"retrieve: {err}")
        keep = self.positions[score > 0] if attribute != "query" else self.positions
        score = score[score > 0] if attribute != "query" else score
        order = np.lexsort((-self.relevance[keep], -score))
        label = f"retrieve {attribute}={args.value.strip()}"
        if len(keep) == 0:
            return ToolResult(keep, label, f"retrieve: no candidate has {attribute}={args.value!r} this turn")
        return ToolResult(keep[order][:k], label)

    def rerank(self, args: RerankArgs, retrieved: np.ndarray) -> ToolResult:
        """Re-rank `retrieved` (every list so far, or the whole pool before any retrieval)."""
        try:
            k = self._k(args.k)
            attribute = choose(args.attribute, (*SCORERS, *ATTRIBUTES), "attribute")
            base = retrieved if len(retrieved) else self.positions
            if attribute == "relevance":
                score = self.relevance[base]
            elif attribute == "quality":
                score = self.box.catalog.quality[self.candidate_ids[base]].astype(np.float64)
            else:
                score = self._match(attribute, args.value, base)
        except BadQuery as err:
            return _fail(f"rerank: {err}")
        order = np.lexsort((-self.relevance[base], -score))
        label = f"rerank {attribute}" + (f"={args.value.strip()}" if attribute not in SCORERS else "")
        return ToolResult(base[order][:k], label)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _k(k: int) -> int:
        if not 1 <= k <= MAX_K:
            raise BadQuery(f"k={k} is out of range; use 1 <= k <= {MAX_K}")
        return k

    def _match(self, attribute: str, value: str, positions: np.ndarray) -> np.ndarray:
        """(len(positions),) score of each candidate for attribute = value: 1/0, or a similarity for `query`."""
        return self.box.matcher.score(attribute, value, self.candidate_ids[positions])
