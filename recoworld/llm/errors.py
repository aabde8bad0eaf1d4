"""What a chat backend raises. Callers fall back on `LLMError`; `BudgetExceeded` stops a study."""

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


class BudgetExceeded(RecoWorldError):
    """The run reached its token or cost budget; the study stops cleanly instead of falling back."""
