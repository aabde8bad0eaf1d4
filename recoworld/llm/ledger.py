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

The lock is `fcntl.flock` (POSIX) on the ledger file itself; the file holds only totals, is
rewritten in place under the lock and survives the run, so a resumed study keeps counting
what it already spent (raise the budget to go on after `BudgetExceeded`). The object keeps
only the path: it pickles to Ray workers, and each call opens the file anew.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from recoworld.llm.errors import BudgetExceeded
from recoworld.llm.usage import Usage

_FIELDS = ("requests", "prompt_tokens", "completion_tokens")


class BudgetLedger:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"BudgetLedger({str(self.path)!r})"

    @contextmanager
    def _locked(self) -> Iterator[tuple[IO[str], dict[str, int]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                fh.seek(0)
                text = fh.read()
                data = json.loads(text) if text.strip() else {}
                yield fh, {k: int(data.get(k, 0)) for k in _FIELDS}
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _write(fh: IO[str], totals: dict[str, int]) -> None:
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(totals))
        fh.flush()

    def totals(self) -> dict[str, int]:
        """What every process has charged so far."""
        if not self.path.exists():
            return dict.fromkeys(_FIELDS, 0)
        with self._locked() as (_, totals):
            return totals

    def reserve(self, usage: Usage) -> None:
        """Count one model call, or raise `BudgetExceeded` if the shared totals leave no room for it."""
        with self._locked() as (fh, totals):
            why = usage.over_budget(totals["requests"], totals["prompt_tokens"], totals["completion_tokens"],
                                    where=" (study-wide)")
            if why is not None:
                raise BudgetExceeded(why)
            totals["requests"] += 1
            self._write(fh, totals)

    def spend(self, prompt_tokens: int, completion_tokens: int) -> None:
        if not prompt_tokens and not completion_tokens:
            return
        with self._locked() as (fh, totals):
            totals["prompt_tokens"] += prompt_tokens
            totals["completion_tokens"] += completion_tokens
            self._write(fh, totals)
