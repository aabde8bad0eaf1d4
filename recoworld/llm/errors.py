"""What a chat backend raises.

Callers fall back on `LLMError` (one request got no usable answer). `LLMRunHalted` is the
other family: a condition that makes falling back pointless or dishonest, so the run stops
with one clear message instead: the budget is spent (`BudgetExceeded`), the server cannot be
reached before the run starts (`LLMServerUnreachable`), too many recent calls failed
(`FallbackRateExceeded`), a replay-only run met a request its cache lacks (`ReplayMiss`), or the cache
file is unreadable (`CacheUnreadable`).
None of them is an `LLMError`, so no simulator turns them into fallbacks.
"""

from __future__ import annotations

from recoworld.errors import RecoWorldError


class LLMError(RecoWorldError):
    """The model gave no usable answer for one request. Simulators fall back and count it."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class LLMUnavailable(LLMError):
    """Timeouts, connection failures or 5xx errors outlasted the retries."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "unavailable")


class LLMOutputError(LLMError):
    """Every attempt, the repair included, gave invalid JSON, a refusal or a reply that failed validation."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "invalid_output")


class LLMRunHalted(RecoWorldError):
    """The run must stop rather than fall back; the command line reports it as one `error:` line (exit 2)."""


class BudgetExceeded(LLMRunHalted):
    """The run reached its token, cost or request budget; the study stops cleanly instead of falling back."""


class LLMServerUnreachable(LLMRunHalted):
    """The health check before a run could not reach the configured server (refused, DNS, bad URL)."""


class FallbackRateExceeded(LLMRunHalted):
    """Too many of the last model calls failed: the circuit breaker stops the run (a study keeps the
    shard unfinished, so a rerun after the server recovers redoes it)."""


class CacheUnreadable(LLMRunHalted):
    """The LLM cache file is not an SQLite database, or a damaged one; it is left as it is."""


class ReplayMiss(LLMRunHalted):
    """`cache="replay"` met a request the cache has no reply for; replay never calls the model."""
