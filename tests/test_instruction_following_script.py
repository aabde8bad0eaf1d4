"""experiments/instruction_following.py runs end to end on a tiny size: from the command line with the
heuristics, and in process with ToolRec on a scripted chat backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from recoworld.evaluation.judge import JudgeVerdict
from recoworld.llm import LLMConfig
from recoworld.llm import backend as backend_module
from recoworld.llm.backend import Reply, Request
from recoworld.llm.scripted import ScriptedBackend, scripted_config
from tests.scripts import ROOT, load_script

SCRIPT = ROOT / "experiments" / "instruction_following.py"


def _module() -> ModuleType:
    return load_script("experiments/instruction_following.py", "instruction_following")


def test_the_script_reports_every_world_with_confidence_intervals(tmp_path: Path) -> None:
    # 12 users for 3 days: with 6 users for 2 days every user of a world could share one retention (no spread).
    cmd = [sys.executable, str(SCRIPT), "--users", "12", "--days", "3", "--agents", "greedy", "instruct",
           "--channels", "structured", "none", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| recommender | channel | retrieval | retention | topic match | similarity | satisfiable |" in proc.stdout
    assert "±" in proc.stdout and "judge" not in proc.stdout  # no judge server given: no judge column
    table = pd.read_csv(tmp_path / "results.csv")
    assert len(table) == 2 * 2 * 2  # recommenders x channels x retrieval
    cell = table.set_index(["recommender", "channel", "retrieval"])
    # Told nothing, instruct is greedy relevance: the same slates, so the same numbers.
    for col in ("retention", "following", "similarity"):
        assert cell.loc[("instruct", "none", "aware"), col] == cell.loc[("greedy", "none", "aware"), col]
    # Told the parsed intent, with candidates that answer it, instruct follows it and greedy does not.
    assert cell.loc[("instruct", "structured", "aware"), "following"] > cell.loc[("greedy", "structured", "aware"),
                                                                                  "following"]
    assert cell.loc[("instruct", "structured", "aware"), "satisfiable"] >= cell.loc[("instruct", "structured",
                                                                                     "blind"), "satisfiable"]
    assert (table["retention_ci"] > 0).all()


def test_toolrec_runs_at_its_own_size_on_any_backend() -> None:
    module = _module()

    def reply(request: Request) -> Reply:
        """Search once, then finish (the merge puts the searched items first)."""
        done = "-> list L1" in request.messages[1]["content"]
        arguments = {"thought": "", "items": []} if done else \
            {"thought": "", "attribute": "query", "value": "football", "k": 3}
        return Reply(None, [("finish" if done else "search", json.dumps(arguments))])

    backend = ScriptedBackend(reply, scripted_config(max_retries=0, repair=False))
    args = module.Args(agents=("greedy", "toolrec"), channels=("text",), toolrec_users=2, toolrec_days=1.0,
                       toolrec_turns=3, users=3, days=1.0)
    table = module.run(args, toolrec_backend=backend)
    assert set(table["size"]) == {"3 users x 1 days", "2 users x 1 days, at most 3 turns each (the ToolRec size)"}
    small = table[table["size"].str.contains("ToolRec")]
    assert sorted(small["recommender"]) == ["greedy", "greedy", "toolrec", "toolrec"]
    assert (small["users"] == 2).all()
    assert len(backend.requests) == 2 * 2 * 3 * 2  # aware/blind x users x turns x (search, finish)
    text = module.markdown(table, judged=False)
    assert "| toolrec | text | aware |" in text and "| toolrec | text | blind |" in text


def test_the_judge_column_appears_only_with_a_judge_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = _module()
    url, model = "http://judge.invalid/v1", "judge-model"
    # The server the flags name, answered by a script: every judged turn scores 0.75 (cached under --out).
    judge = LLMConfig(backend="openai", base_url=url, model=model, cache_path=tmp_path / "llm-cache" / "llm.sqlite")
    scripted = ScriptedBackend(lambda request: JudgeVerdict(score=0.75, reason="on topic"), judge)
    monkeypatch.setitem(backend_module._SHARED, judge, scripted)
    args = module.Args(agents=("instruct",), channels=("structured",), users=3, days=1.0,
                       judge_base_url=url, judge_model=model, out=tmp_path)
    table = module.run(args)
    assert len(scripted.requests) > 0 and (table["judge"] == 0.75).all()
    assert "| retention | topic match | similarity | judge | satisfiable |" in module.markdown(table, judged=True)
