"""A budget account shared by every process of a run: a small JSON file under an exclusive lock.

Each Ray worker of a study has its own backend, hence its own `Usage`; a budget kept there
would let 8 workers spend 8 times it. The study runner therefore points `llm.budget_ledger`
at `<out>/llm-budget.json`, and every backend charges that file:

- `reserve(usage)` before each model call: under the lock, read the totals, raise
  `BudgetExceeded` if one more call would break a budget (`Usage.over_budget`), else count
  the call. Requests are charged before they are sent, so `budget_requests=N` lets at most
  N requests reach the server, whatever the number of workers.
- `spend(prompt_tokens, completion_tokens)` after a reply. Tokens are only known afterwards,
  so token and cost budgets can be overshot by the calls already in flight when they run out.

The lock is `fcntl.flock` (POSIX) on a sibling `<ledger>.lock` file; the ledger holds only
totals and is replaced atomically under that lock, so a worker killed mid-write (a study stops
its other workers when the budget runs out) never leaves it empty. It survives the run, so a
resumed study keeps counting what it already spent (raise the budget to go on after `BudgetExceeded`). The object keeps
only the path: it pickles to Ray workers, and each call opens the file anew.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recoworld.llm.errors import BudgetExceeded
from recoworld.llm.usage import Usage
from recoworld.storage import write_json_atomic

_FIELDS = ("requests", "prompt_tokens", "completion_tokens")


class BudgetLedger:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"BudgetLedger({str(self.path)!r})"

    @contextmanager
    def _locked(self) -> Iterator[dict[str, int]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a", encoding="utf-8") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                text = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
                data = json.loads(text) if text.strip() else {}
                yield {k: int(data.get(k, 0)) for k in _FIELDS}
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def totals(self) -> dict[str, int]:
        """What every process has charged so far."""
        if not self.path.exists():
            return dict.fromkeys(_FIELDS, 0)
        with self._locked() as totals:
            return totals

    def reserve(self, usage: Usage) -> None:
        """Count one model call, or raise `BudgetExceeded` if the shared totals leave no room for it."""
        with self._locked() as totals:
            why = usage.over_budget(totals["requests"], totals["prompt_tokens"], totals["completion_tokens"],
                                    where=" (study-wide)")
            if why is not None:
                raise BudgetExceeded(why)
            totals["requests"] += 1
            write_json_atomic(totals, self.path)

    def spend(self, prompt_tokens: int, completion_tokens: int) -> None:
        if not prompt_tokens and not completion_tokens:
            return
        with self._locked() as totals:
            totals["prompt_tokens"] += prompt_tokens
            totals["completion_tokens"] += completion_tokens
            write_json_atomic(totals, self.path)
