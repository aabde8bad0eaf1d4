"""Schema-directed decoding for the local model: the reply is written from its JSON schema, and the
model is asked only where the schema leaves a choice.

A grammar-constrained sampler (llama.cpp's GBNF) runs the model once per output token and
checks the whole vocabulary against the grammar at every step: on Gemma 3 270M with 2 cores
that halves the decode speed, and a slate turn's reply is hundreds of tokens, most of them
JSON punctuation, key names and item ids the schema already fixes. Here the schema is walked
instead (jump-forward decoding, as in SGLang's compressed FSM or guidance):

- text the schema fixes (`{"item":2699,"reaction":"`, keys, `const`s) is appended without
  asking the model; it reaches the model's KV cache together with the next token it samples,
  in one batched evaluation. It is tokenized together with what follows it (`":"` then
  `click`, as Gemma writes it, not `":` then `"`);
- an `enum`, a boolean, "one more array item" or not: as under a grammar, token by token until
  one value is left, each step's candidates every token that spells the start of a value still
  possible (the last token of the fixed text before it may be re-spelled too; see
  `_Cursor.choose` for why a tiny model needs that);
- `null` or an object (`anyOf`): the model's choice among the branches' first tokens;
- objects of an `anyOf` that share their first properties and then part at a `const`, `enum` or
  boolean: the shared part once, then the model's choice of that value picks the branches that go
  on (a property asked for only after `"leave":true`);
- a number: digit by digit within `minimum`/`maximum`, at most `MAX_DECIMALS` decimals;
- a string: free tokens that cannot break the JSON (no quote, backslash or control byte), until
  the model picks a closing quote or the string reaches its `maxLength`.

So every reply parses and fits its schema by construction, and its length is bounded by the
schema (`reply_bound`), so no token limit can cut it mid-JSON. Schemas outside the supported
subset (e.g. `anyOf` branches that start alike, as in ToolRec's action schema) raise
`Unsupported`, and the backend uses llama.cpp's grammar for them instead.

Sampling follows `SamplingParams` over the allowed tokens only, through llama.cpp's default
chain (top-k `TOP_K`, top-p, min-p `MIN_P`, then the temperature; what grammar decoding runs
after its mask), from a `numpy` generator seeded with the request's seed: the same prompt,
schema and seed give the same reply.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

#: Bytes a string without `maxLength` may take (every string is bounded, so every reply is).
DEFAULT_STRING_BYTES = 200
#: Decimals a number may have; values are clamped by the reply's model anyway.
MAX_DECIMALS = 2
#: Integral digits of a number without `maximum`.
DEFAULT_INT_DIGITS = 6
_NUMBER_END = b",}] \n"
#: Sampling keeps the TOP_K likeliest allowed tokens, then top-p, then those at least MIN_P times as likely as
#: the likeliest, then applies the temperature: llama.cpp's default chain (llama-cpp-python's `top_k=40`,
#: `min_p=0.05`), so both decodings sample alike.
TOP_K = 40
MIN_P = 0.05


class Unsupported(ValueError):
    """A schema construct this decoder does not handle; the caller uses a grammar instead."""


@dataclass
class Vocabulary:
    """Per-model token classes, computed once: what may go inside a string, what closes one, digits."""

    pieces: list[bytes]
    lengths: np.ndarray
    text: np.ndarray  # token ids that may appear inside a JSON string
    text_bytes: np.ndarray  # their lengths in bytes (a free string's step keeps those that still fit)
    closing: np.ndarray  # token ids whose piece starts with '"'
    by_piece: dict[bytes, int]  # the token of each text that is one token
    longest: int  # bytes of the longest token
    number_end: np.ndarray  # token ids that would end a number
    digits: dict[str, int]
    dot: int
    minus: int

    @classmethod
    def of(cls, pieces: list[bytes], tokenize: Callable[[bytes], list[int]]) -> Vocabulary:
        """The classes of a vocabulary given as each token's bytes (special tokens: empty) and its tokenizer."""
        n = len(pieces)
        lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=n)
        safe = np.fromiter((bool(p) and b'"' not in p and b"\\" not in p and min(p) >= 0x20 for p in pieces),
                           dtype=bool, count=n)
        closing = np.fromiter((p[:1] == b'"' for p in pieces), dtype=bool, count=n)
        end = np.fromiter((p[:1] != b"" and p[:1] in _NUMBER_END for p in pieces), dtype=bool, count=n)

        def single(text: str) -> int:
            ids = tokenize(text.encode())
            if len(ids) != 1:
                raise Unsupported(f"the model's tokenizer splits {text!r} into {len(ids)} tokens")
            return ids[0]

        text = np.flatnonzero(safe)
        by_piece = {p: i for i, p in reversed(list(enumerate(pieces))) if p}  # the lowest id of a repeated piece
        return cls(pieces, lengths, text, lengths[text], np.flatnonzero(closing), by_piece, int(lengths.max()),
                   np.flatnonzero(end),
                   {d: single(d) for d in "0123456789"}, single("."), single("-"))


@dataclass
class Decoded:
    text: str
    prompt_tokens: int
    completion_tokens: int
    evaluations: int  # model evaluations (batched steps); the rest of the tokens were forced


T = TypeVar("T")
#: What a step asks of the driver: the tokens to append to the sequence, and the tokens whose next-token
#: logits it needs after them (None: none, the reply is done).
Ask = tuple[list[int], "np.ndarray | None"]
#: A decoding step protocol: yields an `Ask`, is sent the logits of the tokens it asked for (in their order),
#: returns its value. One reply is one such generator, so a driver can run many replies in one batch. Knowing
#: the candidates before the evaluation lets the driver skip the output layer over the whole vocabulary when
#: they are few (`recoworld.llm.llama_decoding`): most of a one-token step's cost on a small model.
Steps = Generator[Ask, np.ndarray, T]


class _Cursor:
    """One reply being written: the output text, the tokens not yet evaluated, the sampler."""

    def __init__(self, tokenize: Callable[[bytes], list[int]], vocab: Vocabulary, temperature: float,
                 top_p: float, seed: int) -> None:
        self.tokenize, self.vocab = tokenize, vocab
        self.temperature, self.top_p = temperature, top_p
        self.rng = np.random.default_rng(seed)
        self.out: list[str] = []
        self.tail = b""  # written (in `out`) but not tokenized yet: it is tokenized together with what follows
        self.pending: list[int] = []  # tokenized, not evaluated yet
        self.completion = 0
        self.evaluations = 0

    def force(self, text: str) -> None:
        self.out.append(text)
        self.tail += text.encode()

    def flush(self) -> None:
        """Tokenize the written text that is not tokenized yet (before the model is asked for a free token)."""
        if self.tail:
            ids = self.tokenize(self.tail)
            self.pending.extend(ids)
            self.completion += len(ids)
            self.tail = b""

    def _sample(self, candidates: np.ndarray) -> Steps[int]:
        """A token among `candidates` (ids), from the model's logits after the pending tokens, through
        llama.cpp's default sampler chain (the one its grammar sampling runs after masking): top-k,
        top-p and min-p on the untempered distribution, then the temperature."""
        pending, self.pending = self.pending, []
        logits = yield pending, candidates
        self.evaluations += 1
        z = np.asarray(logits, dtype=np.float64)
        if self.temperature <= 0.0 or len(candidates) == 1:
            return int(candidates[int(np.argmax(z))])
        if len(candidates) > TOP_K:  # partition, then sort only the top k (a free string's step)
            top = np.argpartition(z, -TOP_K)[-TOP_K:]
            candidates, z = candidates[top], z[top]
        order = np.argsort(-z, kind="stable")
        candidates, z = candidates[order], z[order]
        p = np.exp(z - z[0])
        p /= p.sum()
        keep = min(int(np.searchsorted(np.cumsum(p), self.top_p)) + 1, len(p))  # top-p: the smallest head >= top_p
        keep = min(keep, int(np.count_nonzero(z >= z[0] + math.log(MIN_P))))  # min-p, relative to the likeliest
        candidates, z = candidates[:keep], z[:keep]
        p = np.exp((z - z[0]) / self.temperature)
        return int(candidates[int(self.rng.choice(len(p), p=p / p.sum()))])

    def _take(self, token: int) -> None:
        self.pending.append(token)
        self.completion += 1

    def choose(self, options: Sequence[str]) -> Steps[int]:
        """Write one of `options` (texts), the model choosing token by token until one is left.

        As under a grammar, the model may spell the value in any tokens, and may re-spell the last token
        of the text before it (`":` may become `":"` then `sk`): at each step the candidates are all the
        tokens whose text continues some option still possible. A small model's choice depends strongly
        on this. Forcing `":`, `"`, `click` (a split Gemma never writes) made it click every item, and
        offering only the usual spelling (`":"`, then `click`) never let it skip or share, where grammar
        decoding, on the same prompts, spread its reactions over all five. What is left of the chosen
        option waits to be tokenized with the text that follows."""
        if len(options) == 1:
            self.force(options[0])
            return 0
        v = self.vocab
        head = self.tail
        self.flush()
        heal = b""  # the last token of the text not tokenized before, taken back for the model to re-spell
        if head and self.pending and head.endswith(v.pieces[self.pending[-1]]):
            heal = v.pieces[self.pending.pop()]
            self.completion -= 1
        rest = {k: heal + o.encode() for k, o in enumerate(options)}
        while len(rest) > 1:
            if any(not r for r in rest.values()):
                raise Unsupported(f"allowed values {[options[k] for k in rest]}: one is a prefix of another")
            spelled: dict[int, bytes] = {}  # token -> the text it writes
            for r in rest.values():
                for n in range(1, min(len(r), v.longest) + 1):
                    if (t := v.by_piece.get(r[:n])) is not None:
                        spelled[t] = r[:n]
            if not spelled:
                raise Unsupported(f"no token spells the start of {[options[k] for k in rest]}")
            candidates = np.array(sorted(spelled), dtype=np.int64)
            token = int(candidates[0]) if len(candidates) == 1 else (yield from self._sample(candidates))
            self._take(token)
            piece = spelled[token]
            rest = {k: r[len(piece):] for k, r in rest.items() if r.startswith(piece)}
        (k, left), = rest.items()
        self.out.append(options[k])
        self.tail = left
        return k

    def string(self, max_bytes: int) -> Steps[None]:
        """A JSON string of at most `max_bytes` bytes of content (so at most that many characters)."""
        self.force('"')
        self.flush()
        v = self.vocab
        got = bytearray()
        while len(got) < max_bytes:
            room = v.text[v.text_bytes <= max_bytes - len(got)]
            token = yield from self._sample(np.concatenate([room, v.closing]))
            if v.pieces[token][:1] == b'"':
                break  # the closing quote is forced below, so only the decision is taken from the model
            self._take(token)
            got += v.pieces[token]
        text = got.decode("utf-8", "ignore")
        self.out.append(json.dumps(text)[1:-1])
        self.force('"')

    def decide(self, starts: Sequence[Sequence[str]]) -> Steps[int]:
        """Which alternative comes next (alternative k can start with any text of `starts[k]`), from the
        model's choice among their first tokens; nothing is written (the chosen branch writes its own
        start, tokenized the same way)."""
        owner: dict[int, int] = {}
        for k, texts in enumerate(starts):
            for text in texts:
                if owner.setdefault(self.tokenize(text.encode())[0], k) != k:
                    raise Unsupported(f"alternatives {[list(t) for t in starts]} start with the same token")
        return owner[(yield from self._sample(np.fromiter(owner, dtype=np.int64)))]

    def number(self, low: float | None, high: float | None, integer: bool) -> Steps[None]:
        """A number within [low, high], digit by digit, with at most `MAX_DECIMALS` decimals.

        A digit, a point or the end is offered only when some way of going on from it stays in
        range, so the number always can. Choosing a token that would end the number (a comma, a
        brace, a space) ends it: the decision is the model's, the text after it the schema's."""
        self.flush()
        v = self.vocab
        scale = 1 if integer else 10**MAX_DECIMALS
        top = 10**DEFAULT_INT_DIGITS * scale - 1
        lo = -top if low is None else math.ceil(low * scale)
        hi = top if high is None else math.floor(high * scale)
        sign = ""
        if lo < 0 and hi >= 0:  # both signs fit: the model chooses
            digits0 = np.array(list(v.digits.values()), dtype=np.int64)
            if (yield from self._sample(np.concatenate([[v.minus], digits0]))) == v.minus:
                sign = "-"
        elif hi < 0:
            sign = "-"
        if sign:
            self._take(v.minus)
            lo, hi = max(0, -hi), -lo
        else:
            lo = max(0, lo)
        by_token = {t: d for d, t in v.digits.items()}
        ends = v.number_end
        whole, point, decimals = "", False, ""

        def fits(w: str, pt: bool, dec: str) -> bool:
            """Whether some number that starts `w[.dec]` lies in [lo, hi] (scaled)."""
            if not pt:
                q, k = int(w), 0
                while q * 10**k * scale <= hi:
                    if (q + 1) * 10**k * scale - 1 >= lo:
                        return True
                    if w == "0":
                        return False
                    k += 1
                return False
            base = int(w) * scale + (int(dec) * 10 ** (MAX_DECIMALS - len(dec)) if dec else 0)
            return base <= hi and base + 10 ** (MAX_DECIMALS - len(dec)) - 1 >= lo

        while True:
            if point:
                options = [d for d in v.digits if len(decimals) < MAX_DECIMALS and fits(whole, True, decimals + d)]
            else:
                options = [d for d in v.digits if whole != "0" and fits(whole + d, False, "")]
            value = (int(whole) * scale + (int(decimals) * 10 ** (MAX_DECIMALS - len(decimals)) if decimals else 0)
                     if whole else None)
            can_end = value is not None and (not point or decimals != "") and lo <= value <= hi
            can_point = not integer and not point and whole != "" and fits(whole, True, "")
            ids = np.concatenate([np.array([v.digits[d] for d in options] + ([v.dot] if can_point else []),
                                           dtype=np.int64), ends if can_end else np.zeros(0, dtype=np.int64)])
            token = (yield from self._sample(ids)) if len(ids) > 1 else int(ids[0])
            if token == v.dot:
                point = True
            elif token in by_token:
                if point:
                    decimals += by_token[token]
                else:
                    whole += by_token[token]
            else:
                break
            self._take(token)
        self.out.append(sign + whole + ("." + decimals if point else ""))

    def text(self) -> str:
        return "".join(self.out)


Emit = Callable[[_Cursor], Steps[None]]


def _forced(text: str) -> Emit:
    def emit(c: _Cursor) -> Steps[None]:
        c.force(text)
        yield from ()

    return emit


class _Compiler:
    """Turns a JSON schema into an emitter (a function that writes one value through a `_Cursor`)."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if ref is None:
            return schema
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise Unsupported(f"$ref {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        return self.resolve(node)

    def lead(self, schema: dict[str, Any]) -> list[str]:
        """The texts a value of `schema` can start with (an `anyOf` chooses its branch among them)."""
        s = self.resolve(schema)
        if "const" in s:
            return [json.dumps(s["const"])]
        if "enum" in s:
            return [json.dumps(e) for e in s["enum"]]
        kind = s.get("type")
        return {"null": ["null"], "boolean": ["true", "false"], "object": ["{"], "array": ["["],
                "string": ['"']}.get(kind, []) if isinstance(kind, str) else []

    def compile(self, schema: dict[str, Any]) -> Emit:
        s = self.resolve(schema)
        if "const" in s:
            return _forced(json.dumps(s["const"], separators=(",", ":")))
        if "enum" in s:
            return self._choice([json.dumps(e, separators=(",", ":")) for e in s["enum"]])
        if "anyOf" in s:
            return self._any_of(s["anyOf"])
        kind = s.get("type")
        if kind == "object":
            return self._object(s)
        if kind == "array":
            return self._array(s)
        if kind == "string":
            if "pattern" in s or "format" in s:
                raise Unsupported("string pattern or format")
            cap = int(s.get("maxLength", DEFAULT_STRING_BYTES))
            return lambda c: c.string(cap)
        if kind in ("number", "integer"):
            low, high, integer = s.get("minimum"), s.get("maximum"), kind == "integer"
            scale = 1 if integer else 10**MAX_DECIMALS
            if low is not None and high is not None and math.ceil(low * scale) > math.floor(high * scale):
                raise Unsupported(f"no {kind} with at most {MAX_DECIMALS} decimals lies in [{low}, {high}]")
            return lambda c: c.number(low, high, integer)
        if kind == "boolean":
            return self._choice(["true", "false"])
        if kind == "null":
            return _forced("null")
        raise Unsupported(f"schema {json.dumps(s)[:80]}")

    @staticmethod
    def _choice(options: list[str]) -> Emit:
        def emit(c: _Cursor) -> Steps[None]:
            yield from c.choose(options)

        return emit

    def _object(self, s: dict[str, Any]) -> Emit:
        properties = s.get("properties", {})
        parts = [(("{" if k == 0 else ",") + json.dumps(name) + ":", self.compile(sub))
                 for k, (name, sub) in enumerate(properties.items())]

        def emit(c: _Cursor) -> Steps[None]:
            if not parts:
                c.force("{")
            for key, value in parts:
                c.force(key)
                yield from value(c)
            c.force("}")

        return emit

    def _array(self, s: dict[str, Any]) -> Emit:
        if "prefixItems" in s:
            fixed = [self.compile(x) for x in s["prefixItems"]]
            if s.get("minItems", len(fixed)) != len(fixed) or s.get("maxItems", len(fixed)) != len(fixed):
                raise Unsupported("prefixItems of a varying length")

            def emit_fixed(c: _Cursor) -> Steps[None]:
                for k, item in enumerate(fixed):
                    c.force("[" if k == 0 else ",")
                    yield from item(c)
                c.force("[]" if not fixed else "]")

            return emit_fixed
        item_schema = self.resolve(s.get("items", {}))
        if "enum" not in item_schema:
            raise Unsupported("arrays other than fixed tuples or lists of enum values")
        values = [json.dumps(e, separators=(",", ":")) for e in item_schema["enum"]]
        low, high = int(s.get("minItems", 0)), int(s.get("maxItems", len(values)))

        def emit_list(c: _Cursor) -> Steps[None]:
            c.force("[")
            for k in range(high):
                sep = "" if k == 0 else ","
                options = [sep + v for v in values] + (["]"] if k >= low else [])
                if (yield from c.choose(options)) == len(values):
                    return
            c.force("]")

        return emit_list

    def _any_of(self, branches: list[dict[str, Any]]) -> Emit:
        starts = [self.lead(b) for b in branches]
        firsts = [{text[0] for text in lead} for lead in starts]
        if not all(starts) or sum(map(len, firsts)) != len(set().union(*firsts)):
            objects = [self.resolve(b) for b in branches]
            if all(o.get("type") == "object" and "anyOf" not in o for o in objects):
                return self._objects([list(o.get("properties", {}).items()) for o in objects],
                                     list(range(len(objects))), 0)
            raise Unsupported("anyOf branches that do not start with distinct characters")
        emits = [self.compile(b) for b in branches]

        def emit(c: _Cursor) -> Steps[None]:
            yield from emits[(yield from c.decide(starts))](c)

        return emit


    def _objects(self, branches: list[list[tuple[str, Any]]], live: list[int], k: int) -> Emit:
        """Objects of an `anyOf` (the `live` ones of `branches`, each its properties in order) from their
        property `k` on: properties the live branches share are written once; where they part, each
        branch's schema there must be a `const`, an `enum` or a boolean (a discriminator), the model
        chooses the value, and only the branches that allow it go on. So a reply's shape can depend on
        its own choices (an exit text only after `"leave":true`), at the cost of no extra step."""
        ended = [len(branches[b]) == k for b in live]
        if all(ended):
            return _forced("{}" if k == 0 else "}")
        names = {branches[b][k][0] for b in live}
        if any(ended) or len(names) > 1:
            raise Unsupported(f"anyOf objects whose property {k} differs in name or presence: {sorted(names)}")
        key = ("{" if k == 0 else ",") + json.dumps(names.pop()) + ":"
        schemas = [self.resolve(branches[b][k][1]) for b in live]
        if all(s == schemas[0] for s in schemas):
            value, rest = self.compile(schemas[0]), self._objects(branches, live, k + 1)

            def shared(c: _Cursor) -> Steps[None]:
                c.force(key)
                yield from value(c)
                yield from rest(c)

            return shared
        allowed = [self._values(s) for s in schemas]
        options = list(dict.fromkeys(v for values in allowed for v in values))
        nexts = [self._objects(branches, [b for b, values in zip(live, allowed) if o in values], k + 1)
                 for o in options]

        def parted(c: _Cursor) -> Steps[None]:
            c.force(key)
            yield from nexts[(yield from c.choose(options))](c)

        return parted

    @staticmethod
    def _values(s: dict[str, Any]) -> list[str]:
        """The values a discriminator allows, as JSON text."""
        if "const" in s:
            return [json.dumps(s["const"], separators=(",", ":"))]
        if "enum" in s:
            return [json.dumps(e, separators=(",", ":")) for e in s["enum"]]
        if s.get("type") == "boolean":
            return ["true", "false"]
        raise Unsupported(f"anyOf objects that part at a property that is not a const, enum or boolean: "
                          f"{json.dumps(s)[:80]}")


def compile_schema(schema: dict[str, Any]) -> Emit:
    """The emitter of `schema`, or `Unsupported` (checked before any model call)."""
    return _Compiler(schema).compile(schema)


def decodable(schema: dict[str, Any]) -> bool:
    """Whether `schema` is inside the decoder's subset (else the caller constrains with a grammar)."""
    try:
        compile_schema(schema)
    except Unsupported:
        return False
    return True


def reply_steps(tokenize: Callable[[bytes], list[int]], vocab: Vocabulary, n_prompt: int, schema: dict[str, Any],
                *, temperature: float, top_p: float, seed: int) -> Steps[Decoded]:
    """One reply that follows `schema`, as steps (see `Steps`): the driver evaluates the prompt (with the
    first tokens yielded) and the tokens each step yields, and sends back the next-token logits of the
    candidates the step names. The
    last step yields the last forced tokens, whose logits are not needed: the driver evaluates them only
    so that the next prompt can reuse them."""
    emit = compile_schema(schema)
    cursor = _Cursor(tokenize, vocab, temperature, top_p, seed)
    yield from emit(cursor)
    cursor.flush()
    if cursor.pending:
        yield cursor.pending, None
    return Decoded(cursor.text(), n_prompt, cursor.completion, cursor.evaluations)


#: Characters a number can take under a JSON grammar (llama.cpp allows 16 integral and 16 decimal digits and
#: an exponent).
_GRAMMAR_NUMBER_CHARS = 40


def reply_bound(schema: dict[str, Any]) -> int:
    """The most characters a reply that follows `schema` can take, one optional space around each value
    included (llama.cpp's JSON grammars allow that much whitespace, our decoder none).

    Callers raise a request's token limit to it, assuming a token covers at least one character, so a
    constrained reply is never cut mid-JSON. Unbounded strings count `DEFAULT_STRING_BYTES`."""
    compiler = _Compiler(schema)

    def bound(node: dict[str, Any]) -> int:
        s = compiler.resolve(node)
        if "const" in s:
            return len(json.dumps(s["const"])) + 2
        if "enum" in s:
            return max(len(json.dumps(e)) for e in s["enum"]) + 2
        if "anyOf" in s:
            return max(bound(b) for b in s["anyOf"])
        kind = s.get("type")
        if kind == "object":
            props = s.get("properties", {})
            return 2 + sum(len(json.dumps(k)) + 2 + bound(v) for k, v in props.items()) + 2
        if kind == "array":
            items = s.get("prefixItems") or [s.get("items", {})] * int(s.get("maxItems", 16))
            return 2 + sum(bound(x) + 1 for x in items) + 2
        if kind == "string":
            return int(s.get("maxLength", DEFAULT_STRING_BYTES)) + 4
        if kind in ("number", "integer"):
            return _GRAMMAR_NUMBER_CHARS
        return 7  # true, false, null and their spaces

    return bound(schema)
