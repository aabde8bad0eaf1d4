"""The reference pages are the code's own description: every command and flag, every config key, every
trajectory column. `docs/reference/generate.py` writes them from the Typer app, the pydantic models and
`COLUMNS`; a page that differs from what it would write now fails here, naming the script to rerun."""

from __future__ import annotations

import re
from types import ModuleType

import pytest

from tests.scripts import ROOT, load_script

REFERENCE = ROOT / "docs" / "reference"


def generator() -> ModuleType:
    return load_script("docs/reference/generate.py", "docs_reference_generate")


@pytest.mark.parametrize("page", ["cli.md", "config.md", "trajectory.md"])
def test_a_reference_page_is_what_the_code_says_now(page: str) -> None:
    written = (REFERENCE / page).read_text()
    assert written == generator().PAGES[page](), (
        f"docs/reference/{page} is out of date with the code: run `python docs/reference/generate.py`")


def test_the_cli_reference_lists_every_command_and_flag() -> None:
    """Checked against the app itself, not the generator's output: a generator that skipped a command or
    a flag would write a page that matches itself."""
    import typer

    from recoworld.cli import app

    page = (REFERENCE / "cli.md").read_text()
    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        section = page.split(f"\n## recoworld {name}\n", 1)
        assert len(section) == 2, f"no section for `recoworld {name}`"
        body = section[1].split("\n## ", 1)[0]
        for param in command.params:
            flags = [f for f in [*param.opts, *param.secondary_opts] if f.startswith("-") and f != "--help"]
            for flag in flags:
                assert f"`{flag}`" in body, f"`recoworld {name}` has {flag}, which its section does not list"


def test_the_config_reference_lists_every_key_of_every_model() -> None:
    page = (REFERENCE / "config.md").read_text()
    module = generator()
    models = module.all_models()
    from recoworld.config import (
        CatalogConfig,
        ChoiceConfig,
        DynamicsConfig,
        RetrievalConfig,
        ReturnConfig,
        RewardConfig,
        WorldConfig,
    )
    from recoworld.llm.config import LLMConfig, LocalModelConfig, SamplingParams

    for needed in (WorldConfig, CatalogConfig, ChoiceConfig, DynamicsConfig, ReturnConfig, RetrievalConfig,
                   RewardConfig, LLMConfig, LocalModelConfig, SamplingParams):
        assert needed in models, f"{needed.__name__} is not reached from the reference's roots"
    for model in models:
        section = page.split(f"\n## {model.__name__}\n", 1)
        assert len(section) == 2, f"no section for {model.__name__}"
        keys = re.findall(r"^\| `([^`]+)` \|", section[1].split("\n## ", 1)[0], flags=re.M)
        assert keys == [f.alias or n for n, f in model.model_fields.items()], model.__name__
