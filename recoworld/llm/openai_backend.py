"""Any OpenAI-compatible chat server (OpenAI, vLLM, Ollama, llama.cpp) through the `openai` client.

Structured output is requested in one of three forms: `json_schema` (OpenAI, vLLM),
`{"type": "json_object", "schema": ...}` (llama-cpp-python's server, which answers
`json_schema` with HTTP 500), or the schema written into the prompt and validated
afterwards. With `structured_output="auto"` the first cache miss probes the server once,
in that order, with a one-field schema. Tools go through native function calling unless
`tool_calling="json"`.

The client's own retries are off (`max_retries=0`): the backend protocol owns retries so
it can count them. The API key lives only inside the client object.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from typing import Any

from recoworld.errors import ConfigError
from recoworld.llm.backend import ChatBackend, ErrorKind, Mode, Reply, Request, Spec, Tools, extract_json
from recoworld.llm.config import LLMConfig, SamplingParams
from recoworld.llm.errors import LLMUnavailable

_PROBE_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
_PROBE_MESSAGES = [{"role": "user", "content": 'Reply with the JSON object {"ok": true}.'}]


def _busy(status: int) -> bool:
    """A status that says the server is busy or its gateway failed, not that it refused the request."""
    return status in (408, 409, 429) or 502 <= status <= 504


class OpenAIBackend(ChatBackend):
    name = "openai"

    def __init__(self, config: LLMConfig) -> None:
        super().__init__(config)
        if not config.model:
            raise ConfigError("llm.model: the openai backend needs a model name (e.g. --llm-model gpt-4o-mini)")
        if config.api_key is None and not os.environ.get("OPENAI_API_KEY") and config.base_url is None:
            raise ConfigError(
                "llm.api_key: no API key for api.openai.com; set OPENAI_API_KEY or llm.api_key, "
                "or point llm.base_url at a local server"
            )
        self._client: Any = None
        self._aclient: Any = None

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.config.model!r}, base_url={self.config.base_url!r})"

    @property
    def model_name(self) -> str:
        return str(self.config.model)

    def _client_kwargs(self) -> dict[str, Any]:
        cfg = self.config
        key = cfg.api_key.get_secret_value() if cfg.api_key is not None else os.environ.get("OPENAI_API_KEY")
        # Local servers ignore the key, but the client insists on one.
        return {"base_url": cfg.base_url, "api_key": key or "no-key", "timeout": cfg.timeout_s, "max_retries": 0}

    def _sync(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(**self._client_kwargs())
        return self._client

    def _async(self) -> Any:
        # An AsyncOpenAI client belongs to the loop it first ran on.
        import asyncio

        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aclient[0] is not loop:
            import openai

            self._aclient = (loop, openai.AsyncOpenAI(**self._client_kwargs()))
        return self._aclient[1]

    def _payload(self, req: Request) -> dict[str, Any]:
        p: SamplingParams = req.params
        payload: dict[str, Any] = {
            "model": self.model_name, "messages": req.messages, "max_tokens": p.max_tokens,
            "temperature": p.temperature, "top_p": p.top_p, "seed": p.seed,
        }
        if req.mode == "tools":
            payload["tools"] = req.tools
            payload["tool_choice"] = req.tool_choice
        elif req.mode == "json_schema":
            payload["response_format"] = {"type": "json_schema",
                                          "json_schema": {"name": req.name, "schema": req.json_schema, "strict": False}}
        elif req.mode == "json_object":
            payload["response_format"] = {"type": "json_object", "schema": req.json_schema}
        return payload

    @staticmethod
    def _reply(resp: Any) -> Reply:
        msg = resp.choices[0].message
        calls = [(c.function.name, c.function.arguments) for c in (msg.tool_calls or [])]
        usage = resp.usage
        details = getattr(usage, "prompt_tokens_details", None)
        return Reply(
            msg.content, calls, getattr(msg, "refusal", None),
            prompt_tokens=int(usage.prompt_tokens) if usage else 0,
            completion_tokens=int(usage.completion_tokens) if usage else 0,
            cached_tokens=int(getattr(details, "cached_tokens", None) or 0),
        )

    def _send(self, request: Request) -> Reply:
        return self._reply(self._sync().chat.completions.create(**self._payload(request)))

    async def _asend(self, request: Request) -> Reply:
        return self._reply(await self._async().chat.completions.create(**self._payload(request)))

    def _classify(self, err: Exception) -> ErrorKind:
        import openai

        if isinstance(err, openai.APIStatusError):
            code = err.status_code
            if code >= 500 or code in (408, 409, 429):
                return "transient"
            return "fatal" if code in (401, 403, 404) else "rejected"
        # Timeouts, connection errors, and bodies that are not the JSON the client expects.
        if isinstance(err, (openai.APIError, json.JSONDecodeError)):
            return "transient"
        return "fatal"

    def _fatal(self, err: Exception) -> Exception:
        import openai

        if isinstance(err, openai.APIStatusError):
            # Not the server's message: some servers echo part of the key back.
            return ConfigError(
                f"llm: the server at {self.config.base_url or 'api.openai.com'} answered HTTP {err.status_code}; "
                f"check llm.api_key / OPENAI_API_KEY, llm.model={self.model_name!r} and llm.base_url"
            )
        return err

    def _mode_for(self, spec: Spec) -> Mode | None:
        if isinstance(spec, Tools) and self.config.tool_calling == "native":
            return "tools"
        return super()._mode_for(spec)

    def _detect_mode(self) -> Generator[Request | float, Reply, Mode]:
        """Probe once: the first mode whose reply is a JSON object wins; 'prompt' always works.

        Only an answer about the request can say a mode is unsupported: a 4xx, HTTP 500 or 501
        (llama-cpp-python's server answers `json_schema` with 500), or a reply that is not JSON.
        No answer (a refused connection, a timeout) or a busy server (429, 502-504, 408, 409)
        says nothing about the modes, and the mode found is cached for every later run: it is
        retried with backoff, then `LLMUnavailable`, so nothing is cached.
        """
        import openai

        probe = SamplingParams(temperature=0.0, max_tokens=16)
        for mode in ("json_schema", "json_object"):
            unanswered = 0
            while True:
                self._charge()
                try:
                    reply = yield Request(list(_PROBE_MESSAGES), mode, "probe", _PROBE_SCHEMA, probe)  # type: ignore[arg-type]
                except Exception as err:
                    if self._classify(err) == "fatal":
                        raise self._fatal(err) from None
                    if isinstance(err, openai.APIStatusError) and not _busy(err.status_code):
                        reply = None  # the server answered: it does not take this mode
                        break
                    unanswered += 1
                    self.usage.add(transport_errors=1)
                    if unanswered > self.config.max_retries:
                        status = f"HTTP {err.status_code}" if isinstance(err, openai.APIStatusError) else ""
                        raise LLMUnavailable(
                            f"openai backend ({self.model_name}): no answer from {self.config.base_url or 'the API'} "
                            f"while probing its structured-output mode, {unanswered} attempt(s): "
                            f"{status or type(err).__name__}"
                        ) from None
                    yield self.config.retry_backoff_s * 2.0 ** (unanswered - 1)
                    continue
                break
            if reply is None:
                continue
            self._spend(reply)
            try:
                ok = isinstance(extract_json(reply.content), dict)
            except ValueError:
                ok = False
            if ok:
                return mode  # type: ignore[return-value]
        return "prompt"
