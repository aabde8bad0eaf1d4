"""Typed exceptions, so callers can tell bad input from bugs.

Every message names the offending field or value and, where it helps, says how to fix it.
"""

from __future__ import annotations

from pydantic import ValidationError


class RecoWorldError(Exception):
    """Base class of every error RecoWorld raises on purpose."""


class ConfigError(RecoWorldError, ValueError):
    """A config, spec or constructor argument has an invalid value."""

    @classmethod
    def from_validation(cls, what: str, err: ValidationError) -> ConfigError:
        """Flatten pydantic's nested report into one line per bad field."""
        lines = []
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"]) or "<root>"
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {field}: {e['msg']}{shown}")
        return cls(f"Invalid {what}:\n" + "\n".join(lines))


class InvalidActionError(RecoWorldError, ValueError):
    """A slate passed to `step` has the wrong shape, an unknown item or a duplicate."""


class CatalogFormatError(RecoWorldError, ValueError):
    """A catalog file is missing a column or has one of the wrong type."""


class ResetNeeded(RecoWorldError, RuntimeError):
    """`step` was called before `reset`, or after the episode ended."""
