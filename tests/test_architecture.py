"""docs/architecture.md stays true: every contract it names imports, and every package it maps exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import numpy as np
import pytest

from recoworld.catalog import Catalog
from recoworld.config import ChoiceConfig
from recoworld.population import PopulationSpec, sample_population
from recoworld.simulators.base import BatchUserSimulator
from recoworld.simulators.choice import ChoiceModel
from recoworld.simulators.parametric import ParametricUsers
from recoworld.streams import UserStreams

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
PACKAGE = Path(__file__).resolve().parents[1] / "recoworld"


def _contracts() -> list[str]:
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| `recoworld.")]
    return [re.match(r"\| `([\w.]+)`", row).group(1) for row in rows]  # type: ignore[union-attr]


def test_the_page_names_contracts() -> None:
    assert len(_contracts()) >= 15


@pytest.mark.parametrize("dotted", _contracts())
def test_every_named_contract_exists(dotted: str) -> None:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            assert hasattr(obj, attr), f"docs/architecture.md names {dotted}, but {attr!r} is missing"
            obj = getattr(obj, attr)
        return
    pytest.fail(f"docs/architecture.md names {dotted}, which does not import")


def test_every_mapped_package_exists_and_every_package_is_mapped() -> None:
    text = DOC.read_text()
    tree = text[text.index("recoworld/\n") : text.index("```", text.index("recoworld/\n"))]
    mapped = set(re.findall(r"^  (\w+)/", tree, flags=re.MULTILINE))
    actual = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert mapped == actual
    modules = set(re.findall(r"^  (\w+\.py)", tree, flags=re.MULTILINE))
    assert modules == {p.name for p in PACKAGE.glob("*.py")}


def test_only_the_rl_package_imports_rllib() -> None:
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.parts[len(PACKAGE.parts)] != "rl" and re.search(r"^\s*(from|import) ray\.rllib", p.read_text(),
                                                                      flags=re.MULTILINE)]
    assert offenders == []


class _AlwaysClick(ChoiceModel):
    """Every item is irresistible: the injected choice model decides, the dynamics stay."""

    def utility(self, *args, **kwargs) -> np.ndarray:  # type: ignore[override]
        return np.full(np.shape(args[1]), 50.0)


def test_the_choice_model_is_injectable(catalog: Catalog) -> None:
    users = ParametricUsers(catalog, choice_model=_AlwaysClick(ChoiceConfig()))
    assert isinstance(users, BatchUserSimulator)
    users.reset(sample_population(PopulationSpec.default(), catalog, np.random.default_rng(0), n=4))
    streams = UserStreams.spawn(np.random.default_rng(1), 4)
    users.start_sessions(np.arange(4), np.zeros(4), streams)
    fb = users.review(np.tile(np.arange(5), (4, 1)), streams)
    seen = fb.reactions >= 0
    assert seen.any() and (fb.reactions[seen] >= 1).all()
    with pytest.raises(ValueError, match="either choice"):
        ParametricUsers(catalog, ChoiceConfig(), choice_model=_AlwaysClick(ChoiceConfig()))
