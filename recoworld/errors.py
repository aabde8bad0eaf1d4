"""Typed exceptions, so callers can tell bad input from bugs.

Every message names the offending field or value and, where it helps, says how to fix it.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class RecoWorldError(Exception):
    """Base class of every error RecoWorld raises on purpose."""


class ConfigError(RecoWorldError, ValueError):
    """A config, spec or constructor argument has an invalid value."""

    @classmethod
    def from_validation(
        cls, what: str, err: ValidationError, key_lines: dict[tuple[Any, ...], int] | None = None
    ) -> ConfigError:
        """Flatten pydantic's nested report into one line per bad field.

        With `key_lines` (the line of each key path in the file it came from), each field also
        names its line, or its nearest enclosing key's when the field is missing from the file.
        """
        lines = []
        for e in err.errors():
            loc = tuple(e["loc"])
            field = ".".join(str(p) for p in loc) or "<root>"
            line = next((key_lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in key_lines), None) \
                if key_lines else None
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            msg = e["msg"].removeprefix("Value error, ")  # a validator's own message says enough
            lines.append(f"  {field}{f' (line {line})' if line else ''}: {msg}{shown}")
        return cls(f"Invalid {what}:\n" + "\n".join(lines))


class UnknownTopicError(ConfigError, KeyError):
    """A topic name the catalog does not have (a `KeyError` too, as a failed lookup)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidActionError(RecoWorldError, ValueError):
    """A slate passed to `step` has the wrong shape, an unknown item or a duplicate."""


class CatalogFormatError(RecoWorldError, ValueError):
    """A catalog file is missing a column or has one of the wrong type."""


class ResetNeeded(RecoWorldError, RuntimeError):
    """`step` was called before `reset`, or after the episode ended."""


class RecommenderFailed(RecoWorldError):
    """A recommender's own code raised: the message names the recommender, the user, the turn and the
    exception; `details` holds its traceback (the command line shows it under --debug). `details` lives
    in the instance's dict, so it survives the pickling that carries a study shard's error to the driver."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def check_distinct(names: list[str], what: str) -> None:
    """A name given twice would run twice and count twice in every summary: one `ConfigError`."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"each {what} may be named once; repeated: {', '.join(repeated)}")
