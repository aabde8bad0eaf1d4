"""docs/architecture.md stays true: every contract it names imports, every package it maps exists, and no
import in `recoworld/` reaches a layer after its own."""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
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


#: The layers of docs/architecture.md ("Layers"), lowest first: a module may import its own layer and those
#: before it, never one after it. A unit is a top-level module or package of `recoworld` (`__init__` is the
#: package's own `__init__.py`) or a module inside one; a module belongs to the unit that names it most closely.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundations", ("errors", "storage", "streams", "seeding", "stats", "mindset")),
    ("chat models", ("llm",)),
    ("configs", ("config",)),
    ("catalog", ("catalog",)),
    ("population", ("population",)),
    ("real logs", ("data",)),
    ("user simulators", ("simulators",)),
    ("world and views", ("envs", "__init__")),
    ("recommenders", ("agents", "rl.policy", "rl.features")),
    ("evaluation", ("evaluation",)),
    ("calibration", ("calibration",)),
    ("studies", ("validity", "studies", "rl")),
    ("benchmark", ("bench",)),
    ("command line", ("cli", "__main__")),
)
RANK = {unit: rank for rank, (_, units) in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    """The unit of `LAYERS` a `recoworld` module belongs to: the longest one that is it or holds it."""
    parts = module.split(".")[1:] or ["__init__"]
    for cut in range(len(parts), 0, -1):
        unit = ".".join(parts[:cut])
        if unit in RANK:
            return unit
    raise AssertionError(f"{module} is in no layer of LAYERS")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every `recoworld` import in the file, inside functions and `TYPE_CHECKING` blocks too;
    `from package import name` counts as importing `package.name` where that is a module."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                sub = PACKAGE.parent.joinpath(*f"{base}.{alias.name}".split("."))
                is_module = sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file()
                yield node.lineno, f"{base}.{alias.name}" if is_module else base


def test_the_page_shows_the_layers_the_test_enforces() -> None:
    text = DOC.read_text()
    section = text[text.index("## Layers") : text.index("\n## ", text.index("## Layers") + 1)]
    rows = [line.split("|") for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert tuple((cells[2].strip(), tuple(re.findall(r"`([\w.]+)`", cells[3]))) for cells in rows) == LAYERS


def test_every_module_has_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        _unit(_module(path))


def test_no_import_reaches_a_later_layer() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _unit(_module(path))
        for line, target in _imports(path):
            if target != "recoworld" and not target.startswith("recoworld."):
                continue
            dst = _unit(target)
            if RANK[dst] > RANK[src]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {src} ({LAYERS[RANK[src]][0]}) -> "
                              f"{dst} ({LAYERS[RANK[dst]][0]})")
    assert upward == [], "imports of a later layer of docs/architecture.md:\n" + "\n".join(upward)


def test_only_the_rl_package_imports_rllib() -> None:
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.parts[len(PACKAGE.parts)] != "rl" and re.search(r"^\s*(from|import) ray\.rllib", p.read_text(),
                                                                      flags=re.MULTILINE)]
    assert offenders == []


class _AlwaysClick(ChoiceModel):
    """Every item is irresistible: the injected choice model decides, the dynamics stay."""

    def base_utility(self, *args, **kwargs) -> np.ndarray:  # type: ignore[override]
        return np.full(np.shape(args[0]), 50.0)


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
