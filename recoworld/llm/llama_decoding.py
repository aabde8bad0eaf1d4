"""A llama.cpp model answering requests, in the supervised child or in this process.

Two ways to answer a structured request (`LocalModelConfig.decoding`):
- `schema` (default): `recoworld.llm.schema_decoder` writes the reply from its JSON schema and
  asks the model only at the schema's choices; valid by construction, bounded in length.
- `grammar`: `Llama.create_chat_completion` with the schema as a GBNF grammar, one request at a
  time; also what `schema` uses for schemas outside its subset.

`Batcher` runs one llama.cpp context of `slots` sequences, each with a cache of its own. A
request reuses the longest prefix (in whole multiples of `ALIGN` tokens) any sequence holds, and that prefix is not
evaluated again. Prompts put what is shared first (the system prompt and task are the same for
every call, the persona the same for one user's calls; see `recoworld.simulators.prompts`). When
the sequence holding that prefix holds more past it (another user's persona, or an old feed),
its cache is copied into the least recently used sequence instead of being cut, so users
who take turns each keep their own persona cached (`llm.local.cache_slots`); a copy costs a
memory copy, far less than evaluating the prefix again.

Up to `batch` requests are decoded together: each `llama_decode` evaluates every active reply's
pending tokens at once (their prompts, the text the schema forces, the token just chosen). On a
CPU, evaluating a few tokens costs about as much as evaluating one (the weights are read once
per step), so the replies of several users share each step's cost.

Batching has a price: llama.cpp's kernels depend on how many tokens a step holds, so a reply's
logits, and at a temperature above 0 its sampled tokens, can depend on which other requests
shared its steps. One request at a time (`llm.local.batch: 1`, the default) keeps every reply a
function of its prompt, schema and seed alone, as the record/replay cache and "the same seed
gives the same run" assume; with `batch` above 1, a run is reproduced exactly through its cache.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from recoworld.llm.schema_decoder import Steps, Unsupported, Vocabulary, reply_steps

#: What `Batcher.answer` is sent per request: the chat messages, the JSON schema and the sampling settings.
DecodeRequest = dict[str, Any]
#: Per request: `{"ok": true, "result": <chat completion>}` or `{"ok": false, "error": <class>, "message": ...}`.
Outcome = dict[str, Any]


def failure(err: Exception) -> Outcome:
    """The outcome of a request that raised: the exception's class and message, for the caller to classify."""
    return {"ok": False, "error": type(err).__name__, "message": str(err)[:2000]}


def chat_prompt(llm: Any, messages: list[dict[str, str]]) -> list[int]:
    """The prompt tokens of `messages`, in the chat format `create_chat_completion` uses for this model."""
    from llama_cpp import llama_chat_format

    template = llm.metadata.get("tokenizer.chat_template")
    if template:
        formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=llm.detokenize([llm.token_eos()]).decode(),
            bos_token=llm.detokenize([llm.token_bos()]).decode())
        result = formatter(messages=cast(Any, messages))  # plain dicts: llama_cpp types them as TypedDicts
    else:  # llama-cpp-python's own fallback for a GGUF without a template (the bundled base model)
        result = llama_chat_format.format_llama2(messages=messages)
    return list(llm.tokenize(result.prompt.encode(), add_bos=not result.added_special, special=True))


#: A step that asks for the logits of at most FEW tokens (an enum's spellings, a boolean, digits) gets them from
#: the model's last hidden state and those tokens' rows of the output matrix, and llama.cpp stops before its
#: output layer: on Gemma 3 270M, that layer (262,144 tokens x 640) is 28 of a one-token step's 47 ms.
FEW = 4096
#: The graph node holding the last hidden state, after the final norm (the output layer's input), in llama.cpp.
_HIDDEN = b"result_norm"
#: The graph node holding the input embeddings as looked up, before any scaling: the tied output matrix's rows.
_LOOKUP = b"embd"


def _q8_0(x: np.ndarray) -> np.ndarray:
    """`x` as llama.cpp's CPU matmul sees it against Q8_0 weights: quantized to 8 bits in blocks of 32, with a
    half-precision scale per block. With it, the logits computed here equal llama.cpp's to float rounding."""
    blocks = x.reshape(-1, 32).astype(np.float32)
    scale = np.abs(blocks).max(axis=1) / 127
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
    return (np.round(blocks * inverse[:, None]) * scale.astype(np.float16).astype(np.float32)[:, None]).ravel()


class _OutputLayer:
    """The model's output layer for a few tokens, in numpy, and the evaluation callback that stops llama.cpp
    before its own output layer when no step of a decode needs every logit.

    It assumes the output matrix is the input embedding (Gemma ties them), with Q8_0 weights, and no logit
    soft-capping; `check` compares it with llama.cpp's own logits once, and where they differ (another
    model), every step takes llama.cpp's logits, as before."""

    def __init__(self, llm: Any, n_embd: int) -> None:
        import llama_cpp
        from llama_cpp import _ggml, _internals

        ggml = _ggml.libggml
        ggml.ggml_get_name.restype, ggml.ggml_get_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        ggml.ggml_get_data_f32.restype = ctypes.POINTER(ctypes.c_float)
        ggml.ggml_get_data_f32.argtypes = [ctypes.c_void_p]
        ggml.ggml_nelements.restype, ggml.ggml_nelements.argtypes = ctypes.c_int64, [ctypes.c_void_p]
        self._ggml = ggml
        self.n_embd = n_embd
        self.full = True  # whether the decode under way goes on past the hidden state to every logit
        self.exact = False  # whether this numpy layer gives llama.cpp's logits (`check`)
        self.hidden = np.zeros(0, dtype=np.float32)  # the last ubatch's output rows' hidden states
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._eval)
        self._rows = np.zeros((int(llm.n_vocab()), n_embd), dtype=np.float32)  # pages are touched only when filled
        self._have = np.zeros(int(llm.n_vocab()), dtype=bool)
        # a small context of its own looks rows up (llama.cpp's own dequantisation), stopped after the lookup
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 512, 512, 512, 1
        self._lookup_callback = llama_cpp.ggml_backend_sched_eval_callback(self._eval_lookup)
        params.cb_eval = self._lookup_callback
        self._lookup_ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self._lookup_batch = _internals.LlamaBatch(n_tokens=512, embd=0, n_seq_max=1, verbose=False)
        self._looked_up = np.zeros(0, dtype=np.float32)

    def _tensor(self, t: int) -> np.ndarray:
        return np.ctypeslib.as_array(self._ggml.ggml_get_data_f32(t), shape=(self._ggml.ggml_nelements(t),)).copy()

    def _eval(self, t: int, ask: bool, _: Any) -> bool:
        if ask:  # llama.cpp asks which nodes we want to see: only the hidden state
            return bool(self._ggml.ggml_get_name(t) == _HIDDEN)
        if self._ggml.ggml_nelements(t):  # a part of the decode without outputs leaves the last rows alone
            self.hidden = self._tensor(t)
        return self.full  # False stops the graph here, before the output layer

    def _eval_lookup(self, t: int, ask: bool, _: Any) -> bool:
        if ask:
            return bool(self._ggml.ggml_get_name(t) == _LOOKUP)
        self._looked_up = self._tensor(t)
        return False

    def logits(self, candidates: np.ndarray) -> np.ndarray:
        """The logits of `candidates` after the last output row of the decode just run."""
        missing = candidates[~self._have[candidates]]
        for k in range(0, len(missing), 512):
            part = missing[k: k + 512]
            b = self._lookup_batch.batch
            for i, token in enumerate(part.tolist()):
                b.token[i], b.pos[i], b.seq_id[i][0], b.n_seq_id[i], b.logits[i] = token, i, 0, 1, False
            b.logits[len(part) - 1] = True
            b.n_tokens = len(part)
            self._lookup_ctx.decode(self._lookup_batch)
            self._lookup_ctx.kv_cache_seq_rm(0, 0, -1)
            self._rows[part] = self._looked_up.reshape(len(part), self.n_embd)
            self._have[part] = True
        return self._rows[candidates] @ _q8_0(self.hidden[-self.n_embd:])

    def check(self, full: np.ndarray, tokens: np.ndarray) -> None:
        """Whether this layer gives `full`'s logits (llama.cpp's, after the decode just run) for `tokens`."""
        self.exact = bool(np.allclose(self.logits(tokens), full[tokens], rtol=0, atol=1e-3))


#: llama.cpp's CPU kernels give a token's cache entries and logits that depend on how the tokens were split into
#: evaluations, unless every evaluation holds a multiple of ALIGN tokens: on Gemma 3 270M, 160 prompt tokens
#: evaluated as 64+64+32, 100+60, 156+4 or 136+24 give the last token the same logits to the bit, and as 159+1,
#: 129+31 or 127+33 move a logit by up to 1.2. So a prompt is evaluated in pieces of a multiple of ALIGN tokens
#: (as many as a decode holds), but for its last few tokens, and a cached prefix is reused in whole multiples of
#: ALIGN: a reply never depends on what the cache held before. (Was 64-token chunks: a fifth slower, and up to
#: 63 reusable tokens evaluated again.)
ALIGN = 4


@dataclass
class _Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # what this sequence holds in the cache
    whole: int = 0  # its leading tokens evaluated in aligned pieces (the reusable part)
    used: float = 0.0  # when it last served a request (least recently used is reused first)


@dataclass
class _Job:
    index: int
    slot: _Slot
    steps: Steps[Any]
    todo: list[int]
    want: np.ndarray | None  # the tokens whose logits its next step needs
    fence: int  # prompt tokens before it go in pieces of a multiple of ALIGN
    cached: int  # prompt tokens its sequence already held (not evaluated again)
    started: float
    logits_at: int = -1


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    same = np.asarray(a[:n]) == np.asarray(b[:n])
    return n if same.all() else int(np.argmin(same))


class Batcher:
    """Schema decoding of several requests at once on one `llama_cpp.Llama` (see the module docstring)."""

    def __init__(self, llm: Any, slots: int, batch: int = 1) -> None:
        if not 1 <= batch <= slots:
            raise ValueError(f"batch {batch} must be between 1 and the cached sequences ({slots})")
        import llama_cpp
        from llama_cpp import _internals

        self.llm = llm
        self.n_ctx = int(llm.n_ctx())  # per sequence
        self.n_batch = int(llm.n_batch)
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx = self.n_ctx * slots
        params.n_seq_max = slots
        params.kv_unified = False  # a cache per sequence: attention spans its own tokens, not every sequence's
        self.n_vocab = int(llm.n_vocab())
        self._head = _OutputLayer(llm, int(llm.n_embd()))
        params.cb_eval = self._head.callback
        self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=slots, verbose=False)
        self._slots = [_Slot(seq) for seq in range(slots)]
        self.batch = batch
        self.vocab = Vocabulary.of([bytes(llm.detokenize([i])) for i in range(self.n_vocab)], self.tokenize)
        self._check_output_layer()

    def tokenize(self, text: bytes) -> list[int]:
        return list(self.llm.tokenize(text, add_bos=False, special=False))

    def answer(self, requests: list[DecodeRequest]) -> list[Outcome]:
        """One outcome per request, in order; at most `batch` requests are decoded at a time."""
        out: list[Outcome] = []
        for k in range(0, len(requests), self.batch):
            out.extend(self._round(requests[k: k + self.batch]))
        return out

    def warm_up(self) -> None:
        """One tiny request, so that no user's first turn pays for paging the weights in and building graphs."""
        self.answer([{"messages": [{"role": "user", "content": "Ready?"}], "schema": {"type": "boolean"},
                      "temperature": 0.0, "top_p": 1.0, "seed": 0, "max_tokens": 8}])

    def _check_output_layer(self) -> None:
        """Whether the numpy output layer gives llama.cpp's logits, on a spread of tokens, after a short prompt."""
        seq = self._slots[0].seq
        full = self._every_logit(seq, self.tokenize(b"Is this video worth watching? Answer yes or no:"), 0).copy()
        self._ctx.kv_cache_seq_rm(seq, 0, -1)
        self._head.check(full, np.arange(0, self.n_vocab, 997))

    # ------------------------------------------------------------------ one round of up to `batch` requests

    def _round(self, requests: list[DecodeRequest]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(requests)
        free = sorted(self._slots, key=lambda s: s.used)
        jobs: list[_Job] = []
        grammar: list[int] = []
        for i, request in enumerate(requests):
            try:
                prompt = chat_prompt(self.llm, request["messages"])
                steps = reply_steps(self.tokenize, self.vocab, len(prompt), request["schema"],
                                    temperature=request["temperature"], top_p=request["top_p"], seed=request["seed"])
                if len(prompt) + 1 > self.n_ctx:
                    raise ValueError(f"the prompt has {len(prompt)} tokens; the context window holds {self.n_ctx} "
                                     "(llm.n_ctx)")
                # reuse the longest aligned prefix any sequence holds (the last prompt token gives the logits)
                keep, best = max(((min(_common(s.tokens, prompt), s.whole, len(prompt) - 1) // ALIGN * ALIGN, s)
                                  for s in free), key=lambda c: c[0])
                slot = free[0]  # the least recently used
                if keep and best is not slot:
                    if best.whole <= keep:  # nothing cached past the shared part: carry on in that sequence
                        slot = best
                    else:  # another conversation's cache: copy it to the least recently used, leave it whole
                        self._ctx.kv_cache_seq_rm(slot.seq, 0, -1)
                        self._ctx.kv_cache_seq_cp(best.seq, slot.seq, 0, -1)
                        slot.tokens, slot.whole = best.tokens[:keep], keep
                free.remove(slot)
                self._ctx.kv_cache_seq_rm(slot.seq, keep, -1)
                slot.tokens = slot.tokens[:keep]
                fence = len(prompt) // ALIGN * ALIGN
                slot.whole = fence
                first, want = next(steps)
                jobs.append(_Job(i, slot, steps, [*prompt[keep:], *first], want, fence, keep, time.perf_counter()))
            except Unsupported:
                grammar.append(i)
            except Exception as err:  # this request fails; the others go on
                outcomes[i] = failure(err)
        while jobs:
            self._step(jobs, outcomes)
            jobs = [j for j in jobs if outcomes[j.index] is None]
        for i in grammar:  # outside the decoder's subset: llama.cpp's grammar, on the model's own context
            outcomes[i] = self._grammar(requests[i])
        return [o if o is not None else {"ok": False, "error": "RuntimeError", "message": "no outcome"}
                for o in outcomes]

    def _step(self, jobs: list[_Job], outcomes: list[Outcome | None]) -> None:
        """One `llama_decode`: as many pending tokens as the batch holds, then each finished job's next step."""
        b = self._batch.batch
        n = 0
        for job in jobs:
            job.logits_at = -1
            start = len(job.slot.tokens)
            room = self.n_batch - n if start >= job.fence else min(self.n_batch - n, job.fence - start) // ALIGN * ALIGN
            take = job.todo[:room]
            if not take:
                continue
            if start + len(take) > self.n_ctx:
                outcomes[job.index] = {"ok": False, "error": "ValueError", "message":
                                       f"the request needs more than the context window of {self.n_ctx} tokens "
                                       "(llm.n_ctx)"}
                continue
            for k, token in enumerate(take):
                b.token[n + k] = token
                b.pos[n + k] = start + k
                b.seq_id[n + k][0] = job.slot.seq
                b.n_seq_id[n + k] = 1
                b.logits[n + k] = False
            job.slot.tokens.extend(take)
            job.todo = job.todo[len(take):]
            n += len(take)
            if not job.todo:
                b.logits[n - 1] = True
                job.logits_at = n - 1
            if n == self.n_batch:
                break
        b.n_tokens = n
        asking = [j for j in jobs if j.logits_at >= 0 and outcomes[j.index] is None]
        # one reply alone whose step needs a few logits (or none): llama.cpp stops before its output layer. With
        # several replies in the step, llama.cpp may split it and order their outputs its own way: every logit.
        few = len(asking) == 1 and self._few(asking[0].want)
        self._head.full = not few and any(j.want is not None for j in asking)
        if n:
            self._ctx.decode(self._batch)
        for job in asking:
            full = None if few else np.ctypeslib.as_array(
                ctypes.cast(self._ctx.get_logits_ith(job.logits_at), ctypes.POINTER(ctypes.c_float)),
                shape=(self.n_vocab,))
            try:
                while True:
                    want = job.want
                    if want is None:  # the reply's last forced tokens, evaluated for the next prompt to reuse
                        logits = np.zeros(0, dtype=np.float32)
                    elif few:
                        logits = self._head.logits(want)
                    else:
                        logits = full[want] if full is not None else self._again(job)[want]
                    job.todo, job.want = job.steps.send(logits)
                    if job.todo:
                        break
                    # a choice right after a choice: the same position; a step that needs every logit now that
                    # the output layer was skipped evaluates the position again
                    few = few and self._few(job.want)
            except StopIteration as done:
                job.slot.used = time.perf_counter()
                outcomes[job.index] = {"ok": True, "result": _completion(done.value, job.cached, job.started)}
            except Exception as err:
                outcomes[job.index] = failure(err)

    def _again(self, job: _Job) -> np.ndarray:
        """Every logit at `job`'s last position, by evaluating its last token again."""
        last = len(job.slot.tokens) - 1
        self._ctx.kv_cache_seq_rm(job.slot.seq, last, -1)
        return self._every_logit(job.slot.seq, job.slot.tokens[last:], last)

    def _every_logit(self, seq: int, tokens: list[int], start: int) -> np.ndarray:
        """Evaluate `tokens` at `start` in sequence `seq` (one decode), and return every logit after them."""
        b = self._batch.batch
        for k, token in enumerate(tokens):
            b.token[k], b.pos[k], b.seq_id[k][0], b.n_seq_id[k], b.logits[k] = token, start + k, seq, 1, False
        b.logits[len(tokens) - 1] = True
        b.n_tokens = len(tokens)
        self._head.full = True
        self._ctx.decode(self._batch)
        return np.ctypeslib.as_array(ctypes.cast(self._ctx.get_logits_ith(len(tokens) - 1),
                                                 ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))

    def _few(self, want: np.ndarray | None) -> bool:
        """Whether a step's logits come from `_OutputLayer` (the same source whatever else shares the decode)."""
        return want is None or (self._head.exact and len(want) <= FEW)

    def _grammar(self, request: DecodeRequest) -> Outcome:
        try:
            result = self.llm.create_chat_completion(
                messages=request["messages"], max_tokens=request["max_tokens"], temperature=request["temperature"],
                top_p=request["top_p"], seed=request["seed"],
                response_format={"type": "json_object", "schema": request["schema"]})
        except Exception as err:
            return failure(err)
        return {"ok": True, "result": dict(result)}


def _completion(decoded: Any, cached: int, started: float) -> dict[str, Any]:
    """The chat-completion shape of a decoded reply (what `create_chat_completion` returns), with the
    prompt tokens taken from the cache where OpenAI's usage puts them."""
    return {"choices": [{"message": {"role": "assistant", "content": decoded.text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": decoded.prompt_tokens, "completion_tokens": decoded.completion_tokens,
                      "total_tokens": decoded.prompt_tokens + decoded.completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": cached}},
            "evaluations": decoded.evaluations, "seconds": time.perf_counter() - started}
