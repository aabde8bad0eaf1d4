"""Population studies: a spec, a Ray runner with checkpoints, and a report per segment."""

from recoworld.studies.spec import CreatorSpec, NewItemsSpec, StudySpec

__all__ = ["CreatorSpec", "NewItemsSpec", "StudySpec"]
