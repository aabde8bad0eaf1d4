"""The chat model of one run: its cache kept with the run, its server checked before anything runs."""

from __future__ import annotations

from pathlib import Path

from recoworld.config import WorldConfig
from recoworld.llm.health import check_server


def llm_ready(world: WorldConfig, out: Path, *, calls_model: bool) -> WorldConfig:
    """`world` with its LLM cache under `out` (unless llm.cache_path is set); when the run calls a model, the
    server is probed once first, so an unreachable one is an error before anything runs or falls back."""
    world = world.model_copy(update={"llm": world.llm.for_run(out)})
    if calls_model:
        check_server(world.llm)
    return world
