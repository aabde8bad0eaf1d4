"""The study spec: what `recoworld study spec.yaml` runs, validated before anything starts.

A study runs a population in the multi-agent world under one or more recommenders.
With a `creator`, it runs every recommender twice on the same users and seeds, with
and without the creator's new items, so the difference is the effect of the content.

LLM users: `user_backend: llm` and an `llm:` block (an `LLMConfig`), at the top level or
as `world.user_backend` / `world.llm`. The same `llm` config drives LLM recommenders
(`LLM_AGENTS`, e.g. `toolrec`) named in `recommenders`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recoworld.agents import check_recommender_names
from recoworld.config import WorldConfig, build, load_config, relative_to_file
from recoworld.envs.platform import SocialConfig
from recoworld.evaluation.run_folder import LLM_RUNTIME_FIELDS
from recoworld.population import Beta, Constant, Dist, Normal, PopulationSpec, UserProfile


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NewItemsSpec(_Spec):
    """The items a creator publishes. Unset topics follow the target segment's strongest interest."""

    count: int = Field(20, ge=1, le=100_000)
    topic: str | None = Field(None, description="catalog topic; default: the target segment's favourite")
    quality: Dist = Beta(a=6, b=2)
    duration_min: Dist = Normal(mean=6, std=2, low=0.5, high=60)
    popularity: float = Field(1.0, gt=0, description="prior popularity, in multiples of the catalog median")
    release_day: Dist = Field(default_factory=lambda: Constant(value=0.0), description="day each item goes live")


class CreatorSpec(_Spec):
    """A creator who publishes new items aimed at one segment."""

    name: str = Field(min_length=1)
    target_segment: str = Field(min_length=1)
    items: NewItemsSpec = NewItemsSpec()


class StudySpec(_Spec):
    """A scripted population study. Every random draw derives from `seed`."""

    name: str = Field("study", min_length=1)
    seed: int = Field(0, ge=0)
    n_users: int | None = Field(
        None, ge=1, le=10_000_000, description="users drawn from the population; default: segment sizes"
    )
    shard_size: int = Field(16, ge=1, description="users per shard; each shard is one shared platform")
    recommenders: list[str] = Field(default_factory=lambda: ["greedy"], min_length=1)
    world: WorldConfig = WorldConfig()
    social: SocialConfig = SocialConfig()
    new_item_share: float = Field(0.0, ge=0, lt=1, description="background items published during the horizon")
    population: PopulationSpec = Field(default_factory=PopulationSpec.default)
    profiles: list[UserProfile] | None = Field(
        None, description="explicit users (e.g. built from data); replaces sampling from `population`"
    )
    calibrated: Path | None = Field(
        None, description="a `recoworld calibrate` folder: its world (under `world:`), catalog and users"
    )
    creator: CreatorSpec | None = None
    out: str | None = Field(None, description="output directory; default runs/<name>")

    @model_validator(mode="before")
    @classmethod
    def _calibrated_world(cls, data: Any) -> Any:
        from recoworld.calibration.inputs import with_calibrated_world

        return with_calibrated_world(data)

    @model_validator(mode="before")
    @classmethod
    def _lift_llm(cls, data: Any) -> Any:
        """Top-level `user_backend:` and `llm:` are shorthands for `world.user_backend` and `world.llm`."""
        if not isinstance(data, dict) or not {"user_backend", "llm"} & data.keys():
            return data
        data = dict(data)
        world = data.get("world", {})
        if isinstance(world, WorldConfig):
            world = world.model_dump(exclude_unset=True)
        if not isinstance(world, dict):
            return data  # field validation reports the bad `world`
        world = dict(world)
        for key in ("user_backend", "llm"):
            if key in data:
                if key in world:
                    raise ValueError(f"{key} is given twice, at the top level and as world.{key}; give it once")
                world[key] = data.pop(key)
        data["world"] = world
        return data

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        check_recommender_names(self.recommenders)
        if self.profiles is not None and not self.profiles:
            raise ValueError("profiles: an empty list; give at least one UserProfile or leave it unset")
        if self.creator is not None:
            segments = self.segment_names()
            if self.creator.target_segment not in segments:
                raise ValueError(
                    f"creator.target_segment {self.creator.target_segment!r} is not a segment; segments: {segments}"
                )
        return self

    def out_dir(self, out: str | os.PathLike[str] | None = None) -> Path:
        """Where results go: `out` (the command line's), else the spec's `out`, else runs/<name>."""
        return Path(out if out is not None else self.out or Path("runs") / self.name)

    def segment_names(self) -> list[str]:
        if self.profiles is not None:
            return list(dict.fromkeys(p.segment for p in self.profiles))
        if self.calibrated is not None:
            from recoworld.calibration.inputs import cached_calibration

            return list(dict.fromkeys(p.segment for p in cached_calibration(str(self.calibrated)).profiles))
        return [s.name for s in self.population.segments]

    @property
    def arms(self) -> tuple[str, ...]:
        """`baseline` alone, or `without` / `with` the creator's content."""
        return ("without", "with") if self.creator is not None else ("baseline",)

    @property
    def runs(self) -> int:
        """Recommender runs per user: every recommender in every arm, what a user's results grow with."""
        return len(self.recommenders) * len(self.arms)

    def fingerprint(self) -> str:
        """Hash of everything that determines results; a checkpoint only resumes the same study."""
        exclude: dict[str, Any] = {"out": True, "world": {"llm": LLM_RUNTIME_FIELDS}}
        return hashlib.sha256(self.model_dump_json(exclude=exclude).encode()).hexdigest()[:16]

    @classmethod
    def parse(cls, data: dict[str, Any]) -> StudySpec:
        return build(cls, "study spec", data)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], calibrated: str | os.PathLike[str] | None = None) -> StudySpec:
        """Load a spec; `population:` may also name a population YAML file, relative to the spec.

        `calibrated` (the command line's `--calibrated`, relative to the working directory)
        replaces the spec's own `calibrated:`."""

        def prepare(data: dict[str, Any], path: Path) -> dict[str, Any]:
            data = relative_to_file("population", "calibrated")(data, path)
            if isinstance(data.get("population"), Path):
                data["population"] = PopulationSpec.from_yaml(data["population"]).model_dump()
            return data

        return load_config(cls, path, "study spec", prepare, calibrated=calibrated)
