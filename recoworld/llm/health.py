"""Is the model there? A health check before a run, and a circuit breaker during it.

`check_server(config)` probes an OpenAI-compatible server once before a run that needs it
(`simulate`, `study`, `fidelity` and `validate` with LLM users or an LLM recommender): one
`GET <base_url>/models` with a short timeout. Any HTTP answer, an error status included,
means the server is there; a refused connection, a failed DNS lookup, a connect timeout or a
URL that is not one raises `LLMServerUnreachable` naming the URL, before any user has run,
so an outage never turns into a run of parametric fallbacks. It is skipped for the local
backend (its model process is supervised instead) and with `cache="replay"`, which never
calls the model, so a cached run replays with the server down.

`FallbackBreaker` watches the outcome of every model call a backend makes (cache hits are
not calls). Once more than `max_fallback_rate * fallback_window` of the last
`fallback_window` calls failed, the failing call raises `FallbackRateExceeded` instead of
its `LLMError`, which simulators would have turned into one more fallback, and the window
starts afresh. With the defaults (0.25 of 20) the sixth failure within 20 calls stops the
run, whether the server died mid-run or the model keeps answering garbage.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import deque

from recoworld.llm.config import LLMConfig
from recoworld.llm.errors import FallbackRateExceeded, LLMError, LLMServerUnreachable

#: Seconds the health check waits for a connection and an answer.
HEALTH_TIMEOUT_S = 5.0
OPENAI_URL = "https://api.openai.com/v1"


def check_server(config: LLMConfig, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """Raise `LLMServerUnreachable` unless the configured OpenAI-compatible server answers (see the module)."""
    if config.backend != "openai" or config.cache == "replay":
        return
    base = config.base_url or OPENAI_URL
    hint = "start the server or fix llm.base_url / --llm-base-url"
    if config.cache != "off":
        hint += "; to replay a complete cache without a server, use llm.cache=replay (--llm-cache replay)"
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LLMServerUnreachable(f"llm.base_url {base!r} is not an http(s) URL (e.g. http://127.0.0.1:8000/v1)")
    key = config.api_key.get_secret_value() if config.api_key is not None else os.environ.get("OPENAI_API_KEY")
    auth = {"Authorization": f"Bearer {key or 'no-key'}"}
    request = urllib.request.Request(base.rstrip("/") + "/models", headers=auth)
    try:
        with urllib.request.urlopen(request, timeout=min(timeout_s, config.timeout_s)):
            return
    except urllib.error.HTTPError:
        return  # it answered: whatever the status, the server is there (bad keys fail the first call clearly)
    except urllib.error.URLError as err:
        reason = err.reason
        why = f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    except TimeoutError:
        return  # connected, but slow to answer a listing: reachable
    except (OSError, ValueError) as err:  # a reset connection, a malformed URL
        why = f"{type(err).__name__}: {err}"
    why = " ".join(why.split())[:300]
    raise LLMServerUnreachable(f"the LLM server at {base} cannot be reached ({why}); {hint}")


class FallbackBreaker:
    """The sliding window of call outcomes behind `LLMConfig.max_fallback_rate` (see the module)."""

    def __init__(self, max_rate: float, window: int, where: str = "") -> None:
        self.max_rate = max_rate
        self.window = window
        self.where = where
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        return {"max_rate": self.max_rate, "window": self.window, "where": self.where}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(**state)  # type: ignore[misc, arg-type]

    def success(self) -> None:
        with self._lock:
            self._outcomes.append(False)

    def failure(self, err: LLMError) -> None:
        """Record a failed call; raise `FallbackRateExceeded` (from `err`) when the window is over the limit."""
        with self._lock:
            self._outcomes.append(True)
            failed, seen = sum(self._outcomes), len(self._outcomes)
            if failed <= self.max_rate * self.window:
                return
            self._outcomes.clear()
        raise FallbackRateExceeded(
            f"LLM calls keep failing{self.where}: {failed} of the last {seen} model calls fell back "
            f"(llm.max_fallback_rate={self.max_rate:g} over llm.fallback_window={self.window}); last error: "
            f"{err}. Stopped rather than run on fallbacks: fix the server or model and rerun "
            "(a study resumes where it stopped)"
        ) from err
