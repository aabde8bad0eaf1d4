"""The lines that open a study's report: who was simulated, for how long, against what."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the runner imports Ray; the notes need only its record's fields
    from recoworld.studies.runner import StudySetup
    from recoworld.studies.spec import StudySpec


def study_notes(spec: StudySpec, setup: StudySetup) -> list[str]:
    """Markdown bullets: users, shards, horizon, seed and recommenders; the creator and the segment it aims at;
    the LLM users' backend, model and concurrency."""
    notes = [
        f"- {len(setup.users)} users in {setup.n_shards} shards of up to {spec.shard_size}, "
        f"{spec.world.horizon_days:g} days, seed {spec.seed}; recommenders: {', '.join(spec.recommenders)}"
    ]
    if spec.creator is not None:
        notes.append(
            f"- creator {spec.creator.name!r}: {spec.creator.items.count} new items on "
            f"{setup.target_topic!r}, aimed at segment {spec.creator.target_segment!r}"
        )
    if spec.world.user_backend == "llm":
        notes.append(
            f"- LLM users: {spec.world.llm.backend} backend, model {spec.world.llm.model or 'default'}, "
            f"up to {spec.world.llm.concurrency} requests in flight per shard"
        )
    return notes
