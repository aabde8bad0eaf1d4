"""Your own recommender, by reference: `pkg.module:Class`, `path/to/file.py:Class`, or an installed plug-in.

Anywhere RecoWorld takes a recommender name (`--agents`, study specs, `make_recommender`)
it also takes a reference to a `Recommender` subclass:

- `my_package.my_module:MyRecommender`: imported like any module (it must be importable);
- `path/to/file.py:MyRecommender`: loaded from the file, no package needed;
- a name registered by an installed distribution in the `recoworld.agents` entry-point group,
  e.g. in its `pyproject.toml`: `[project.entry-points."recoworld.agents"] mine = "my_pkg:MyRecommender"`.

The class is built as `Class(slate_size, seed=seed)`, with `catalog=catalog` added when its
constructor takes a `catalog` argument. `check_recommender` (in `recoworld.agents.check`), or
`recoworld check-agent SPEC` on the command line, tries such a class against a small world
before a long run does.

## Names
Runs label a recommender in their tables, file names (`trajectories/<name>.parquet`), plots,
leaderboards and reports. A `module:Class` or `file.py:Class` reference is labelled by its
class's `name` attribute (`label`), read from the class before anything is built, so that
a clash stops a run before it starts. A `name` is 1 to 64 ASCII letters, digits, `.`, `_`
or `-`, starting with a letter or digit, so that it is a file name on every system and can
never be mistaken for a reference. A class that does not set `name` (it inherits
`Recommender.name`) is labelled by its class name, when that is such a name; a `name` that
is set but unusable (empty, not a str, a path, spaces) is an error, since its author meant
something else. An installed plug-in is labelled by its entry-point name, the name typed.
Two recommenders of a run with one name (upper and lower case alike: one file on macOS and
Windows), or a plug-in named like a built-in recommender, are an error naming both
(`recoworld.agents.agent_labels`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from recoworld.agents.base import Recommender
from recoworld.catalog import Catalog
from recoworld.errors import ConfigError

#: The entry-point group installed plug-ins register their recommenders in.
ENTRY_POINT_GROUP = "recoworld.agents"
#: A label that is a file name everywhere (no separator, no leading dot, no space) and holds no `:`.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NAME_RULE = "1 to 64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"


def is_reference(name: str) -> bool:
    """`module:Class` or `file.py:Class` (a recommender given by where its class lives)."""
    target, sep, attr = name.rpartition(":")
    return bool(sep and target and attr.isidentifier())


@functools.cache
def plugin_names() -> tuple[str, ...]:
    """Recommenders installed distributions register in the `recoworld.agents` entry-point group."""
    return tuple(sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)))


def load_class(name: str) -> type[Recommender]:
    """The `Recommender` subclass a reference or plug-in name points at; a clear `ConfigError` otherwise."""
    if name in plugin_names():
        (ep,) = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        try:
            cls = ep.load()
        except Exception as err:  # a plug-in's import error is the user's to see, in one line
            raise ConfigError(f"agent {name!r}: the plug-in {ep.value!r} does not load: {err}") from None
        return _checked(cls, name)
    target, _, attr = name.rpartition(":")
    module = _load_file(target, name) if target.endswith(".py") else _import(target, name)
    if not hasattr(module, attr):
        raise ConfigError(f"agent {name!r}: {target} has no attribute {attr!r}")
    return _checked(getattr(module, attr), name)


def label(name: str) -> str:
    """What runs call the recommender that reference or plug-in `name` builds (see Names above)."""
    if name in plugin_names():
        return name
    cls = load_class(name)
    owner = next(c for c in cls.__mro__ if "name" in vars(c))  # Recommender declares one
    if owner is Recommender:
        if NAME_PATTERN.fullmatch(cls.__name__):
            return cls.__name__
        raise ConfigError(f"agent {name!r}: {cls.__name__} sets no `name`, and its class name cannot label it in "
                          f"tables and file names; set one, e.g. name = \"my-recommender\" ({_NAME_RULE})")
    value = vars(owner)["name"]
    if not (isinstance(value, str) and NAME_PATTERN.fullmatch(value)):
        where = cls.__name__ if owner is cls else f"{cls.__name__} (from {owner.__name__})"
        raise ConfigError(f"agent {name!r}: {where}.name = {value!r} cannot label it in tables and file names; "
                          f"a name is {_NAME_RULE}")
    return value


def build(name: str, catalog: Catalog, slate_size: int, seed: int | None) -> Recommender:
    """An instance of the referenced class (see the module docstring for the constructor call)."""
    cls = load_class(name)
    kwargs: dict[str, Any] = {"seed": seed}  # for a constructor we know only by its signature
    if "catalog" in inspect.signature(cls).parameters:
        kwargs["catalog"] = catalog
    try:
        return cls(slate_size, **kwargs)
    except Exception as err:  # the user's constructor: report it, with what it was given
        raise ConfigError(f"agent {name!r}: {cls.__name__}(slate_size={slate_size}, "
                          f"{', '.join(f'{k}=...' for k in kwargs)}) failed: {type(err).__name__}: {err}") from None


def _import(module: str, name: str) -> object:
    try:
        return importlib.import_module(module)
    except Exception as err:
        raise ConfigError(f"agent {name!r}: module {module!r} does not import: {type(err).__name__}: {err}") from None


def _load_file(path: str, name: str) -> object:
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise ConfigError(f"agent {name!r}: no Python file at {file}")
    module_name = f"recoworld_user_agent_{hashlib.sha1(str(file).encode()).hexdigest()[:12]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise ConfigError(f"agent {name!r}: {file} does not run: {type(err).__name__}: {err}") from None
    sys.modules[module_name] = module
    return module


def _checked(cls: object, name: str) -> type[Recommender]:
    if not (isinstance(cls, type) and issubclass(cls, Recommender)):
        raise ConfigError(f"agent {name!r} is not a recoworld.agents.Recommender subclass "
                          f"(got {cls!r}); subclass Recommender and implement act()")
    if inspect.isabstract(cls):  # Python refuses to build it before its __init__ runs: name what it lacks
        missing = ", ".join(f"{m}()" for m in sorted(getattr(cls, "__abstractmethods__", ())))
        raise ConfigError(f"agent {name!r}: {cls.__name__} is abstract: it does not implement {missing}, so it "
                          "cannot be built (its __init__ never ran)")
    return cls
