"""A budget account shared by every process of a run, named by the ledger file `llm.budget_ledger`.

Each Ray worker of a study has its own backend, hence its own `Usage`; a budget kept there
would let 8 workers spend 8 times it. Runs of many processes therefore point `llm.budget_ledger`
at one ledger (a study: `<out>/llm-budget.json`), and every backend charges it:

- `reserve(usage)` before each model call: read the totals, raise `BudgetExceeded` if one
  more call would break a budget (`Usage.over_budget`), else count the call, all in one step
  (`charge`). Requests are charged before they are sent, so `budget_requests=N` lets at most
  N requests reach the server, whatever the number of workers.
- `spend(prompt_tokens, completion_tokens)` after a reply. Tokens are only known afterwards,
  so token and cost budgets can be overshot by the calls already in flight when they run out.

Where the totals live depends on where the processes run. On one machine (simulate, distill,
bench) they are the file itself (`LedgerFile`): JSON locked with `fcntl.flock` (POSIX) on a
sibling `<ledger>.lock` file and replaced atomically under that lock, so a worker killed
mid-write (a study stops its other workers when the budget runs out) never leaves it empty.
On a Ray cluster a file on the driver's disk is not on the other nodes: a study keeps the totals
in one actor and each shard's task charges it (`kept_by`; `recoworld.studies.shared_llm`), and
the driver writes the actor's totals to the file. Either way the file survives the run, so a
resumed study keeps counting what it already spent (raise the budget to go on after
`BudgetExceeded`). `BudgetLedger` keeps only the path: it pickles to Ray workers, and each call
finds its account anew.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from recoworld.llm.errors import BudgetExceeded
from recoworld.llm.usage import Usage
from recoworld.storage import write_json_atomic

_FIELDS = ("requests", "prompt_tokens", "completion_tokens")
#: What decides whether a call fits the budget: `Usage`'s budgets and prices (a `Usage` holds a lock, so it
#: does not travel to another process; these do).
LIMITS = ("price_input_per_mtok", "price_output_per_mtok", "budget_usd", "budget_tokens", "budget_requests")


def limits(usage: Usage) -> dict[str, float | None]:
    """The budgets and prices of `usage`, for an account in another process (`charge`)."""
    return {k: getattr(usage, k) for k in LIMITS}


def charge(totals: dict[str, int], budget: dict[str, float | None]) -> str | None:
    """Count one model call in `totals`; or, when `budget` (`limits`) leaves no room for it, count nothing and
    say why. The one rule of every account, applied where its totals live."""
    why = Usage(**budget).over_budget(  # type: ignore[arg-type]  # exactly LIMITS, Usage's own fields
        totals["requests"], totals["prompt_tokens"], totals["completion_tokens"], where=" (study-wide)"
    )
    if why is None:
        totals["requests"] += 1
    return why


def add_tokens(totals: dict[str, int], prompt_tokens: int, completion_tokens: int) -> None:
    totals["prompt_tokens"] += prompt_tokens
    totals["completion_tokens"] += completion_tokens


class Account(Protocol):
    """Where a ledger's totals live: its file, or (in a Ray task) the study's actor."""

    def reserve(self, usage: Usage) -> None: ...

    def spend(self, prompt_tokens: int, completion_tokens: int) -> None: ...

    def totals(self) -> dict[str, int]: ...


#: Ledgers whose totals this process charges elsewhere than their file (`kept_by`).
_KEPT: dict[Path, Account] = {}


@contextmanager
def kept_by(path: str | os.PathLike[str], account: Account) -> Iterator[None]:
    """While inside, every `BudgetLedger(path)` of this process charges `account` instead of the file: a
    study's shard task, on a node that may not have the file, charges the study's actor."""
    key = Path(path)
    if key in _KEPT:
        raise RuntimeError(f"the budget ledger {key} is already kept elsewhere in this process")
    _KEPT[key] = account
    try:
        yield
    finally:
        del _KEPT[key]


class LedgerFile:
    """The totals in the ledger file itself, under an exclusive lock (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

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
            why = charge(totals, limits(usage))
            if why is not None:
                raise BudgetExceeded(why)
            write_json_atomic(totals, self.path)

    def spend(self, prompt_tokens: int, completion_tokens: int) -> None:
        if not prompt_tokens and not completion_tokens:
            return
        with self._locked() as totals:
            add_tokens(totals, prompt_tokens, completion_tokens)
            write_json_atomic(totals, self.path)

    def record(self, totals: dict[str, int]) -> None:
        """Write totals kept elsewhere (a study's actor) to the file, so that a resumed run continues them."""
        with self._locked():
            write_json_atomic({k: int(totals[k]) for k in _FIELDS}, self.path)


class BudgetLedger:
    """The ledger at `path`, charged to this process's account for it: the file, unless `kept_by` says else."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"BudgetLedger({str(self.path)!r})"

    def _account(self) -> Account:
        account = _KEPT.get(self.path)
        return account if account is not None else LedgerFile(self.path)

    def totals(self) -> dict[str, int]:
        """What every process has charged so far."""
        return self._account().totals()

    def reserve(self, usage: Usage) -> None:
        """Count one model call, or raise `BudgetExceeded` if the shared totals leave no room for it."""
        self._account().reserve(usage)

    def spend(self, prompt_tokens: int, completion_tokens: int) -> None:
        self._account().spend(prompt_tokens, completion_tokens)
