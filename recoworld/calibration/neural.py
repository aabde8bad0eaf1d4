"""The neural choice model of `recoworld distill --neural` (issue 15): a small torch per-item scorer.

For when the parametric form is too rigid. One batched MLP scores every (user, item) decision from
- the user's state: skips in a row so far, share of the daily time budget spent, conformity,
  novelty trait, activity;
- the item's features: relevance to the persona, quality, popularity, minutes, slot, and which of the
  persona's favourite topics it is (one-hot by rank, or none);
- the recent history: novelty against the last reviewed items (the parametric user's memory).
It predicts the reaction (skip/click/like/share), the share of the item's minutes watched, and
whether the user leaves after the item; trained full-batch with Adam on the fit users' decisions.
Its agreement is item-level (teacher-forced) only: it is not a simulator backend, so the
session-level measures (instructions, return gaps) are left empty for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recoworld.calibration.distill import features

RANKS = 5  # favourite-topic ranks one-hot encoded (more: counted as the last)


def inputs(items: pd.DataFrame) -> np.ndarray:
    """(N, F) float32 inputs of the scorer (see the module docstring)."""
    rank = items["topic_rank"].to_numpy()
    onehot = (np.minimum(rank, RANKS - 1)[:, None] == np.arange(RANKS)[None, :]) & (rank[:, None] >= 0)
    state = np.stack([np.minimum(items["skip_run"].to_numpy(np.float64), 10) / 5,
                      items["spent"].to_numpy(np.float64) / np.maximum(items["budget"].to_numpy(np.float64), 1e-6),
                      items["activity"].to_numpy(np.float64), items["novelty"].to_numpy(np.float64),
                      items["novelty_trait"].to_numpy(np.float64),
                      np.log1p(items["duration"].to_numpy(np.float64))], axis=1)
    return np.concatenate([features(items)[:, 1:], onehot, (rank < 0)[:, None], state], axis=1).astype(np.float32)


@dataclass
class NeuralChoice:
    """A trained scorer with its input standardization."""

    net: object
    mean: np.ndarray
    std: np.ndarray

    def predict(self, items: pd.DataFrame) -> pd.DataFrame:
        """Teacher-forced predictions in `agreement.predict`'s columns."""
        import torch

        x = torch.from_numpy((inputs(items) - self.mean) / self.std)
        with torch.no_grad(), _one_thread():
            out = self.net(x)  # type: ignore[operator]
        probs = torch.softmax(out[:, :4], dim=1).numpy()
        watched = torch.sigmoid(out[:, 4]).numpy()
        clicked = probs[:, 1:].sum(axis=1)
        return pd.DataFrame({"user_id": items["user_id"].to_numpy(), "reaction": probs.argmax(axis=1),
                             "p_click": clicked, "dwell": clicked * watched * items["duration"].to_numpy(),
                             "leaves": torch.sigmoid(out[:, 5]).numpy() > 0.5})


def fit_neural(items: pd.DataFrame, hidden: int = 32, steps: int = 400, lr: float = 0.01,
               seed: int = 0) -> NeuralChoice:
    """Train the scorer on `items` (decisions of the fit users)."""
    import torch

    torch.manual_seed(seed)
    raw = inputs(items)
    mean, std = raw.mean(axis=0), raw.std(axis=0) + 1e-6
    x = torch.from_numpy((raw - mean) / std)
    react = torch.from_numpy(items["reaction"].to_numpy(np.int64))
    dur = np.maximum(items["duration"].to_numpy(np.float64), 1e-6)
    watched = torch.from_numpy(np.clip(items["dwell_min"].to_numpy(np.float64) / dur, 0, 1).astype(np.float32))
    clicked = react >= 1
    leaves = torch.from_numpy(items["leaves"].to_numpy(bool).astype(np.float32))
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                              torch.nn.ReLU(), torch.nn.Linear(hidden, 6))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    with _one_thread():
        for _ in range(steps):
            opt.zero_grad()
            out = net(x)
            loss = torch.nn.functional.cross_entropy(out[:, :4], react) + bce(out[:, 5], leaves)
            if clicked.any():
                loss = loss + bce(out[clicked, 4], watched[clicked])
            loss.backward()
            opt.step()
    net.eval()
    return NeuralChoice(net, mean, std)


@contextmanager
def _one_thread() -> Iterator[None]:
    """A net this small runs fastest on one thread (30x faster than two on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
