"""Per-user random streams: what makes a batched world reproduce its single-user view exactly.

Every simulated user draws from a numpy `Generator` of its own. A batch of B users
therefore gives user i exactly the draws it would get alone with the same seed: nothing a
user draws depends on how many other users share the batch, on which of them are live,
or on the order they are processed in. `RecoWorld-v0` is the one-stream case (its stream
is Gymnasium's `np_random`); the vector env seeds stream i as `RecoWorld-v0` with seed
`seed + i` would; the population world spawns its streams from the world seed.

Uniforms for many users come from one compiled loop that calls each stream's own
bit generator (numpy's `next_double` for PCG64, the generator every view uses), so
row j gets exactly what `streams[rows[j]].random(shape)` would return, without a
Python call per user. Streams on other bit generators take that per-user call instead.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

#: numpy's PCG64 `next_double(state)`: one address shared by every PCG64 stream, called with
#: the stream's own state pointer (the interface numpy documents for numba and cffi). It is passed
#: to the compiled loop as an argument, not a global, so the loop can be cached on disk.
_PCG64_NEXT_DOUBLE = np.uint64(ctypes.cast(np.random.PCG64(0).ctypes.next_double, ctypes.c_void_p).value)
_NOT_PCG64 = np.uint64(0)


@intrinsic
def _next_double(typingctx: Any, function: types.Type, state: types.Type) -> tuple[Any, Callable[..., ir.Value]]:
    """Call the C function `double f(void *state)` at address `function`."""
    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: tuple[ir.Value, ir.Value]) -> ir.Value:
        address, pointer = args
        void_pointer = ir.IntType(8).as_pointer()
        callee = builder.inttoptr(address, ir.FunctionType(ir.DoubleType(), [void_pointer]).as_pointer())
        return builder.call(callee, [builder.inttoptr(pointer, void_pointer)])

    return types.float64(types.uint64, types.uint64), codegen


@numba.njit(nogil=True, cache=True)
def _fill_uniforms(function: np.uint64, states: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    for j in range(rows.shape[0]):
        state = states[rows[j]]
        for i in range(out.shape[1]):
            out[j, i] = _next_double(function, state)


def _state_address(generator: np.random.Generator) -> np.uint64:
    """The PCG64 state pointer of `generator`, or 0 when it runs on another bit generator."""
    bits = generator.bit_generator
    if type(bits) is not np.random.PCG64:
        return _NOT_PCG64
    return np.uint64(bits.ctypes.state.value)


class UserStreams:
    """B random streams, one per user row; `streams[i]` is row i's `Generator`."""

    def __init__(self, generators: Sequence[np.random.Generator]) -> None:
        self._generators = list(generators)
        # State pointers for the compiled draws, built on first use and kept in step with `__setitem__`;
        # the generators they point into stay alive in `_generators`.
        self._states: np.ndarray | None = None

    @classmethod
    def spawn(cls, rng: np.random.Generator, n: int) -> UserStreams:
        """`n` independent streams derived from one parent generator (advances it)."""
        return cls(rng.spawn(n))

    @property
    def generators(self) -> tuple[np.random.Generator, ...]:
        return tuple(self._generators)

    def __len__(self) -> int:
        return len(self._generators)

    def __getitem__(self, row: int) -> np.random.Generator:
        return self._generators[row]

    def __setitem__(self, row: int, generator: np.random.Generator) -> None:
        self._generators[row] = generator
        if self._states is not None:
            self._states[row] = _state_address(generator)

    def random(self, rows: np.ndarray | Sequence[int], shape: int | tuple[int, ...] = ()) -> np.ndarray:
        """(len(rows), *shape) uniforms in [0, 1): row j from stream `rows[j]`."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *shape))
        if self._states is None:
            self._states = np.array([_state_address(g) for g in self._generators], dtype=np.uint64)
        if len(rows) and self._states[rows].all():
            _fill_uniforms(_PCG64_NEXT_DOUBLE, self._states, rows, out.reshape(len(rows), -1))
        else:
            gens = self._generators
            for j, r in enumerate(rows.tolist()):
                out[j] = gens[r].random(shape)
        return out

    def logistic(self, rows: np.ndarray | Sequence[int], shape: int | tuple[int, ...] = ()) -> np.ndarray:
        """Standard logistic noise: `u + noise > 0` happens with probability sigmoid(u)."""
        p = self.random(rows, shape)
        return np.log(p) - np.log1p(-p)

    def normal(self, rows: np.ndarray | Sequence[int], scale: float = 1.0) -> np.ndarray:
        """(len(rows),) normal draws with mean 0 and standard deviation `scale`."""
        gens = self._generators
        return np.array([gens[r].normal(0.0, scale) for r in np.asarray(rows).tolist()], dtype=np.float64)

    def churn_and_gap(self, rows: np.ndarray | Sequence[int], gap_shape: float) -> tuple[np.ndarray, np.ndarray]:
        """Per row a churn uniform and a unit-mean Gamma(`gap_shape`) gap: a session end's draws."""
        gens = self._generators
        u = np.empty(len(rows))
        g = np.empty(len(rows))
        for j, r in enumerate(np.asarray(rows).tolist()):
            u[j] = gens[r].random()
            g[j] = gens[r].gamma(gap_shape, 1.0 / gap_shape)
        return u, g
