"""Token, cost and failure accounting for one backend, and the budget that can stop a study.

Counters are updated from the event loop and from worker threads, hence the lock.
`server_s` is the wall time spent waiting on the model, which lets benchmarks separate
RecoWorld's own overhead from the server's time. The budgets here are this process's; a
study charges them to a shared `BudgetLedger` instead (see `recoworld.llm.ledger`), with the
same rule (`over_budget`).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field

from recoworld.llm.errors import BudgetExceeded


@dataclass
class Usage:
    price_input_per_mtok: float = 0.0
    price_output_per_mtok: float = 0.0
    budget_usd: float | None = None
    budget_tokens: int | None = None
    budget_requests: int | None = None
    requests: int = 0  # model calls actually sent (probes, retries and repairs included)
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens the model reused from its cache (as servers report them)
    transport_errors: int = 0
    invalid_outputs: int = 0
    repairs: int = 0
    failures: int = 0  # requests that raised LLMError to the caller
    server_s: float = 0.0
    model_starts: int = 0  # local model processes started (the first start included)
    model_deaths: int = 0  # local model processes that died or hung during a call
    model_restarts: int = 0
    model_load_s: float = 0.0  # wall time spent starting local model processes
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_usd(self) -> float:
        spent = self.prompt_tokens * self.price_input_per_mtok + self.completion_tokens * self.price_output_per_mtok
        return spent / 1e6

    def add(self, **counts: float) -> None:
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def over_budget(self, requests: int, prompt_tokens: int, completion_tokens: int, where: str = "") -> str | None:
        """Why one more model call would break a budget, given these totals; None when it would not."""
        tokens = prompt_tokens + completion_tokens
        cost = (prompt_tokens * self.price_input_per_mtok + completion_tokens * self.price_output_per_mtok) / 1e6
        if self.budget_requests is not None and requests >= self.budget_requests:
            return f"LLM request budget reached{where}: {requests} calls sent, budget_requests={self.budget_requests}"
        if self.budget_tokens is not None and tokens >= self.budget_tokens:
            return f"LLM token budget reached{where}: {tokens} tokens used, budget_tokens={self.budget_tokens}"
        if self.budget_usd is not None and cost >= self.budget_usd:
            return f"LLM cost budget reached{where}: ${cost:.4f} spent, budget_usd={self.budget_usd}"
        return None

    @property
    def has_budget(self) -> bool:
        return any(b is not None for b in (self.budget_requests, self.budget_tokens, self.budget_usd))

    def check_budget(self) -> None:
        """Raise before a new model call once a budget is spent; cache hits are free and never stopped."""
        why = self.over_budget(self.requests, self.prompt_tokens, self.completion_tokens)
        if why is not None:
            raise BudgetExceeded(why)

    def as_dict(self) -> dict[str, float]:
        data = {k: v for k, v in asdict(self).items() if not k.startswith(("_", "price", "budget"))}
        return {**data, "total_tokens": self.total_tokens, "cost_usd": round(self.cost_usd, 6)}

    def describe(self) -> str:
        text = (
            f"LLM: {self.requests} calls, {self.cache_hits} cache hits, {self.prompt_tokens}+{self.completion_tokens} "
            f"tokens, ~${self.cost_usd:.4f}; {self.transport_errors} transport errors, {self.invalid_outputs} "
            f"invalid replies, {self.repairs} repairs, {self.failures} failed requests"
        )
        if self.model_starts:
            text += (f"; model process: {self.model_starts} starts, {self.model_deaths} deaths, "
                     f"{self.model_restarts} restarts, {self.model_load_s:.1f} s loading")
        return text
