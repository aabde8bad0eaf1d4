"""Per-user random streams: what makes a batched world reproduce its single-user view exactly.

Every simulated user draws from a numpy `Generator` of its own. A batch of B users
therefore gives user i exactly the draws it would get alone with the same seed: nothing a
user draws depends on how many other users share the batch, on which of them are live,
or on the order they are processed in. `RecoWorld-v0` is the one-stream case (its stream
is Gymnasium's `np_random`); the vector env seeds stream i as `RecoWorld-v0` with seed
`seed + i` would; the population world spawns its streams from the world seed.

Draws for many users are one call per user, stacked: the per-call cost (~1 us) is the
price of exact per-user reproducibility, and callers keep it to one or two calls per
user per step by drawing a step's uniforms in one block.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class UserStreams:
    """B random streams, one per user row; `streams[i]` is row i's `Generator`."""

    def __init__(self, generators: Sequence[np.random.Generator]) -> None:
        self.generators = list(generators)

    @classmethod
    def spawn(cls, rng: np.random.Generator, n: int) -> UserStreams:
        """`n` independent streams derived from one parent generator (advances it)."""
        return cls(rng.spawn(n))

    def __len__(self) -> int:
        return len(self.generators)

    def __getitem__(self, row: int) -> np.random.Generator:
        return self.generators[row]

    def __setitem__(self, row: int, generator: np.random.Generator) -> None:
        self.generators[row] = generator

    def random(self, rows: np.ndarray | Sequence[int], shape: int | tuple[int, ...] = ()) -> np.ndarray:
        """(len(rows), *shape) uniforms in [0, 1): row j from stream `rows[j]`."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        gens = self.generators
        out = np.empty((len(rows), *shape))
        for j, r in enumerate(np.asarray(rows).tolist()):
            out[j] = gens[r].random(shape)
        return out

    def logistic(self, rows: np.ndarray | Sequence[int], shape: int | tuple[int, ...] = ()) -> np.ndarray:
        """Standard logistic noise: `u + noise > 0` happens with probability sigmoid(u)."""
        p = self.random(rows, shape)
        return np.log(p) - np.log1p(-p)

    def normal(self, rows: np.ndarray | Sequence[int], scale: float = 1.0) -> np.ndarray:
        """(len(rows),) normal draws with mean 0 and standard deviation `scale`."""
        gens = self.generators
        return np.array([gens[r].normal(0.0, scale) for r in np.asarray(rows).tolist()], dtype=np.float64)

    def churn_and_gap(self, rows: np.ndarray | Sequence[int], gap_shape: float) -> tuple[np.ndarray, np.ndarray]:
        """Per row a churn uniform and a unit-mean Gamma(`gap_shape`) gap: a session end's draws."""
        gens = self.generators
        u = np.empty(len(rows))
        g = np.empty(len(rows))
        for j, r in enumerate(np.asarray(rows).tolist()):
            u[j] = gens[r].random()
            g[j] = gens[r].gamma(gap_shape, 1.0 / gap_shape)
        return u, g
