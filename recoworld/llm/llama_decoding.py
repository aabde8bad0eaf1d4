"""A llama.cpp model answering one request, in the supervised child or in this process.

Two ways to answer a structured request (`LocalModelConfig.decoding`):
- `schema` (default): `recoworld.llm.schema_decoder` writes the reply from its JSON schema and
  asks the model only at the schema's choices; valid by construction, bounded in length.
- `grammar`: `Llama.create_chat_completion` with the schema as a GBNF grammar, as before; also
  what `schema` uses for schemas outside its subset.

The model holds one sequence, and a request keeps the longest prefix its prompt shares with the
tokens the model already holds: prompts that start alike (the system prompt, the task, one
user's persona; see `recoworld.simulators.prompts`) skip that prefix's evaluation.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from recoworld.llm.schema_decoder import Unsupported, Vocabulary, decode

#: What `answer` is sent: the chat messages, the JSON schema and the sampling settings.
DecodeRequest = dict[str, Any]


class LlamaModel:
    """`schema_decoder.Model` over a `llama_cpp.Llama`."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self._prompt_rest: list[int] = []
        self.vocab = Vocabulary.of(self)

    def tokenize_text(self, text: bytes) -> list[int]:
        return list(self.llm.tokenize(text, add_bos=False, special=False))

    def pieces(self) -> list[bytes]:
        return [bytes(self.llm.detokenize([i])) for i in range(self.llm.n_vocab())]

    def start(self, prompt: list[int]) -> None:
        llm = self.llm
        held = np.asarray(llm.input_ids[: min(llm.n_tokens, len(prompt))])
        same = held == np.asarray(prompt[: len(held)])
        common = len(held) if same.all() else int(np.argmin(same))
        common = min(common, len(prompt) - 1)  # evaluate at least one token: the logits must be this prompt's
        llm.n_tokens = common  # `Llama.eval` drops the cache past n_tokens
        self._prompt_rest = list(prompt[common:])

    def logits(self, tokens: list[int]) -> np.ndarray:
        batch, self._prompt_rest = [*self._prompt_rest, *tokens], []
        if self.llm.n_tokens + len(batch) > self.llm.n_ctx():
            raise ValueError(f"the request needs more than the context window of {self.llm.n_ctx()} tokens "
                             "(llm.n_ctx)")
        self.llm.eval(batch)
        return np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),))


def chat_prompt(llm: Any, messages: list[dict[str, str]]) -> list[int]:
    """The prompt tokens of `messages`, in the chat format `create_chat_completion` uses for this model."""
    from llama_cpp import llama_chat_format

    template = llm.metadata.get("tokenizer.chat_template")
    if template:
        formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=llm.detokenize([llm.token_eos()]).decode(),
            bos_token=llm.detokenize([llm.token_bos()]).decode())
        result = formatter(messages=messages)
    else:  # llama-cpp-python's own fallback for a GGUF without a template (the bundled base model)
        result = llama_chat_format.format_llama2(messages=messages)
    return list(llm.tokenize(result.prompt.encode(), add_bos=not result.added_special, special=True))


def answer(llm: Any, model: LlamaModel, request: DecodeRequest) -> dict[str, Any]:
    """A chat-completion-shaped result for `request`, decoded from its schema (grammar outside the subset)."""
    started = time.perf_counter()
    try:
        prompt = chat_prompt(llm, request["messages"])
        out = decode(model, model.vocab, prompt, request["schema"], temperature=request["temperature"],
                     top_p=request["top_p"], seed=request["seed"])
    except Unsupported:
        return dict(llm.create_chat_completion(
            messages=request["messages"], max_tokens=request["max_tokens"], temperature=request["temperature"],
            top_p=request["top_p"], seed=request["seed"],
            response_format={"type": "json_object", "schema": request["schema"]}))
    return {"choices": [{"message": {"role": "assistant", "content": out.text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
                      "total_tokens": out.prompt_tokens + out.completion_tokens},
            "evaluations": out.evaluations, "seconds": time.perf_counter() - started}


def warm_up(llm: Any, model: LlamaModel) -> None:
    """One tiny request, so that no user's first turn pays for paging the weights in and building graphs."""
    answer(llm, model, {"messages": [{"role": "user", "content": "Ready?"}], "schema": {"type": "boolean"},
                        "temperature": 0.0, "top_p": 1.0, "seed": 0, "max_tokens": 8})
