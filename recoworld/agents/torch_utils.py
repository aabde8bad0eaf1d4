"""Torch plumbing shared by the learning recommenders: seeded generators and checkpoints.

A checkpoint is one `torch.save` file holding plain data only (the agent kind, its
config as a dict and its tensors), so it loads with `weights_only=True` and never
unpickles code. Writes are atomic: a crash mid-save leaves the previous file intact.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from recoworld.errors import ConfigError
from recoworld.storage import write_atomic

_FORMAT = 1


def torch_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded from the agent seed (a fresh nondeterministic one for `None`)."""
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


def save_checkpoint(path: str | os.PathLike[str], kind: str, config: dict[str, Any],
                    state: dict[str, Any]) -> Path:
    """Write `{kind, config, state}` atomically to `path` and return the path."""
    buf = io.BytesIO()
    torch.save({"format": _FORMAT, "kind": kind, "config": config, "state": state}, buf)
    return write_atomic(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike[str], kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `(config, state)` of a checkpoint written by `save_checkpoint` for agent `kind`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    blob = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        raise ConfigError(f"{path} is not a RecoWorld agent checkpoint (format {_FORMAT})")
    if blob["kind"] != kind:
        raise ConfigError(f"{path} holds a {blob['kind']!r} agent, expected {kind!r}")
    return blob["config"], blob["state"]
