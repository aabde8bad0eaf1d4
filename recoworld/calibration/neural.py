"""The neural choice model of `recoworld distill --neural` (issue 15): a small torch per-item scorer.

For when the parametric form is too rigid. One batched MLP scores every (user, item) decision from
- the user's state before the item: skips in a row so far, share of the daily time budget spent, conformity,
  novelty trait, activity (after the item, both would tell its reaction);
- the item's features: relevance to the persona, quality, popularity, minutes, slot, and which of the
  persona's favourite topics it is (one-hot by rank, or none);
- the attributes the distilled choice model's taste reads (`recoworld.calibration.terms`, issue 33): the item's
  topic, subtopic and creator (one-hot), its minutes steps, the persona's favourite score of its topic, and the
  persona features (attributes one-hot, novelty trait, daily minutes); the net forms their interactions itself;
- the recent history: novelty against the last reviewed items (the parametric user's memory).
It predicts the reaction (skip/click/like/share), the share of the item's minutes watched, and
whether the user leaves after the item; trained full-batch with Adam on the fit users' decisions.
Its agreement is item-level (teacher-forced) only: it is not a simulator backend, so the
session-level measures (instructions, return gaps) are left empty for it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recoworld.calibration.distill import features
from recoworld.calibration.terms import design, persona_rows
from recoworld.catalog import Catalog
from recoworld.config import TasteConfig
from recoworld.population import UserProfile
from recoworld.storage import write_atomic

RANKS = 5  # favourite-topic ranks one-hot encoded (more: counted as the last)
#: The taste groups whose columns the scorer reads (their persona interactions it learns itself).
ATTRIBUTES = ("topic", "minutes", "subtopic", "creator", "favourite")


def inputs(items: pd.DataFrame, layout: TasteConfig, profiles: Mapping[str, UserProfile],
           catalog: Catalog) -> np.ndarray:
    """(N, F) float32 inputs of the scorer (see the module docstring); `layout` names the attribute columns
    (`terms.layout`) and `profiles` the decisions' users."""
    rank = items["topic_rank"].to_numpy()
    onehot = (np.minimum(rank, RANKS - 1)[:, None] == np.arange(RANKS)[None, :]) & (rank[:, None] >= 0)
    state = np.stack([np.minimum(items["skips_before"].to_numpy(np.float64), 10) / 5,
                      items["spent_before"].to_numpy(np.float64)
                      / np.maximum(items["budget"].to_numpy(np.float64), 1e-6),
                      items["activity"].to_numpy(np.float64), items["novelty"].to_numpy(np.float64),
                      items["novelty_trait"].to_numpy(np.float64),
                      np.log1p(items["duration"].to_numpy(np.float64))], axis=1)
    groups = design(items, layout, profiles, catalog, ATTRIBUTES)
    attributes = np.concatenate([groups[g].toarray() for g in ATTRIBUTES]
                                + [persona_rows(items, list(layout.persona), profiles)], axis=1)
    return np.concatenate([features(items)[:, 1:], onehot, (rank < 0)[:, None], state, attributes],
                          axis=1).astype(np.float32)


class NeuralChoice:
    """A trained scorer, folded for inference.

    Training standardizes the inputs; here the standardization is folded into the first layer (W/std, b -
    W mean/std), the weights are kept as contiguous float32 transposes, and `scores` runs the three layers as
    fused multiply-adds (`addmm`, in-place ReLU) into buffers allocated once per chunk size, under
    `inference_mode` on one thread. Chunks of `CHUNK` rows keep each layer's activations in cache. Scoring is
    then bound by the arithmetic, not by per-call allocations or autograd bookkeeping.
    """

    #: Rows scored per pass (activations of 32 hidden units: 1 MiB per layer).
    CHUNK = 8192

    def __init__(self, net: Any, mean: np.ndarray, std: np.ndarray, layout: TasteConfig) -> None:
        import torch

        self.net, self.mean, self.std, self.layout = net, mean, std, layout
        layers = [m for m in net if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            w0 = layers[0].weight / torch.from_numpy(std)
            b0 = layers[0].bias - w0 @ torch.from_numpy(mean)
            self._weights = [(w0.t().contiguous(), b0.clone())] + [
                (m.weight.t().contiguous().clone(), m.bias.clone()) for m in layers[1:]]
        self._buffers: dict[int, list[Any]] = {}

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(N, 6) float32 of raw inputs (N, F) (`inputs`): the 4 reaction probabilities (skip, click, like,
        share), then the share of the item watched if clicked and the probability of leaving after it."""
        import torch

        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty((len(x), 6), dtype=np.float32)
        with torch.inference_mode(), _one_thread():
            src, dst = torch.from_numpy(x), torch.from_numpy(out)
            for lo in range(0, len(x), self.CHUNK):
                rows = src[lo:lo + self.CHUNK]
                self._forward(rows, dst[lo:lo + len(rows)])
        return out

    def _forward(self, x: Any, out: Any) -> None:
        import torch

        n = len(x)
        bufs = self._buffers.get(n)
        if bufs is None:
            bufs = self._buffers[n] = [torch.empty(n, w.shape[1]) for w, _ in self._weights[:-1]]
        h = x
        for (w, b), buf in zip(self._weights[:-1], bufs):
            torch.addmm(b, h, w, out=buf).relu_()
            h = buf
        w, b = self._weights[-1]
        torch.addmm(b, h, w, out=out)
        logits = out[:, :4]
        logits.sub_(logits.amax(dim=1, keepdim=True)).exp_()
        logits.div_(logits.sum(dim=1, keepdim=True))
        out[:, 4:].sigmoid_()

    def save(self, path: str | Path) -> Path:
        """The trained net and its standardization, for `load_neural` (torch's weights-only format)."""
        import torch

        buf = io.BytesIO()
        torch.save({"state": self.net.state_dict(), "mean": torch.from_numpy(self.mean),
                    "std": torch.from_numpy(self.std), "hidden": self.net[0].out_features,
                    "layout": self.layout.model_dump_json()}, buf)
        return write_atomic(path, buf.getvalue())

    def predict(self, items: pd.DataFrame, profiles: Mapping[str, UserProfile], catalog: Catalog) -> pd.DataFrame:
        """Teacher-forced predictions in `agreement.predict`'s columns."""
        s = self.scores(inputs(items, self.layout, profiles, catalog))
        clicked = s[:, 1:4].sum(axis=1)
        return pd.DataFrame({"user_id": items["user_id"].to_numpy(), "reaction": s[:, :4].argmax(axis=1),
                             "p_click": clicked, "dwell": clicked * s[:, 4] * items["duration"].to_numpy(),
                             "leaves": s[:, 5] > 0.5})


def fit_neural(items: pd.DataFrame, profiles: Mapping[str, UserProfile], catalog: Catalog, hidden: int = 32,
               steps: int = 400, lr: float = 0.01, seed: int = 0) -> NeuralChoice:
    """Train the scorer on `items` (decisions of the fit users). Weight decay 0.05: with the attribute inputs, a
    noisy LLM's flips were otherwise learned by heart (on the 10%-flip rules of tests/distill_rule.py, device x
    topic reached 0.71 held-out accuracy at 1e-4 and 0.81 at 0.01, 0.88 at 0.05 against a ceiling of 0.90; the
    noiseless rules stayed at 0.99-1.00)."""
    import torch

    from recoworld.calibration.terms import layout as attribute_layout

    torch.manual_seed(seed)
    layout = attribute_layout(items, profiles, catalog)
    raw = inputs(items, layout, profiles, catalog)
    mean, std = raw.mean(axis=0), raw.std(axis=0) + 1e-6
    x = torch.from_numpy((raw - mean) / std)
    react = torch.from_numpy(items["reaction"].to_numpy(np.int64))
    dur = np.maximum(items["duration"].to_numpy(np.float64), 1e-6)
    watched = torch.from_numpy(np.clip(items["dwell_min"].to_numpy(np.float64) / dur, 0, 1).astype(np.float32))
    clicked = react >= 1
    leaves = torch.from_numpy(items["leaves"].to_numpy(bool).astype(np.float32))
    net = _network(x.shape[1], hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=5e-2)
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
    return NeuralChoice(net, mean, std, layout)


def _network(n_inputs: int, hidden: int) -> Any:
    """The scorer's MLP: two ReLU layers of `hidden` units, 6 outputs (4 reaction logits, watched, leaves)."""
    import torch

    return torch.nn.Sequential(torch.nn.Linear(n_inputs, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                               torch.nn.ReLU(), torch.nn.Linear(hidden, 6))


def load_neural(path: str | Path) -> NeuralChoice:
    """A scorer `NeuralChoice.save` wrote (`recoworld distill --neural` writes OUT/neural.pt)."""
    import torch

    saved = torch.load(path, weights_only=True)
    net = _network(len(saved["mean"]), int(saved["hidden"]))
    net.load_state_dict(saved["state"])
    net.eval()
    return NeuralChoice(net, saved["mean"].numpy(), saved["std"].numpy(),
                        TasteConfig.model_validate_json(saved["layout"]))


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
