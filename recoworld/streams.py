"""Per-user random streams: what makes a batched world reproduce its single-user view exactly.

Every simulated user draws from a numpy `Generator` of its own. A batch of B users
therefore gives user i exactly the draws it would get alone with the same seed: nothing a
user draws depends on how many other users share the batch, on which of them are live,
or on the order they are processed in. `RecoWorld-v0` is the one-stream case (its stream
is Gymnasium's `np_random`); the vector env seeds stream i as `RecoWorld-v0` with seed
`seed + i` would; the population world spawns its streams from the world seed.

Draws for many users come from compiled loops that call each stream's own bit generator
(numpy's `next_double` and `next_uint64` for PCG64, the generator every view uses), so row j
gets exactly what `streams[rows[j]].random(shape)` (or `.normal`, `.gamma`) would return,
without a Python call per user. Normal and Gamma draws run numpy's own algorithms (ziggurat
tables, Marsaglia-Tsang) on numpy's tables, as numba ships them for its `Generator` support.
Streams on other bit generators take the per-user call instead.
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
from numba.np.random._constants import (
    fe_double,
    fi_double,
    ke_double,
    ki_double,
    we_double,
    wi_double,
    ziggurat_exp_r,
    ziggurat_nor_inv_r,
    ziggurat_nor_r,
)

#: numpy's PCG64 `next_double(state)` and `next_uint64(state)`: addresses shared by every PCG64
#: stream, called with the stream's own state pointer (the interface numpy documents for numba and
#: cffi). They are passed to the compiled loops as arguments, not globals, so the loops can be
#: cached on disk.
_PCG64_BITS = np.random.PCG64(0).ctypes


def _address(function: Any) -> np.uint64:
    """The address of a C function pointer from numpy's `ctypes` interface, as the loops take it."""
    address = ctypes.cast(function, ctypes.c_void_p).value
    if address is None:
        raise RuntimeError(f"numpy's PCG64 ctypes interface gave a null function pointer: {function!r}")
    return np.uint64(address)


_PCG64_NEXT_DOUBLE = _address(_PCG64_BITS.next_double)
_PCG64_NEXT_UINT64 = _address(_PCG64_BITS.next_uint64)
_PCG64_NEXT_UINT32 = _address(_PCG64_BITS.next_uint32)
_NOT_PCG64 = np.uint64(0)


def _bit_call(result: types.Type, llvm_result: ir.Type) -> Callable[..., Any]:
    """An intrinsic calling the C function `result f(void *state)` at address `function`."""
    @intrinsic
    def call(typingctx: Any, function: types.Type, state: types.Type) -> tuple[Any, Callable[..., ir.Value]]:
        def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: tuple[ir.Value, ir.Value]) -> ir.Value:
            address, pointer = args
            void_pointer = ir.IntType(8).as_pointer()
            callee = builder.inttoptr(address, ir.FunctionType(llvm_result, [void_pointer]).as_pointer())
            return builder.call(callee, [builder.inttoptr(pointer, void_pointer)])

        return result(types.uint64, types.uint64), codegen

    return call


_next_double = _bit_call(types.float64, ir.DoubleType())
_next_uint64 = _bit_call(types.uint64, ir.IntType(64))
_next_uint32 = _bit_call(types.uint32, ir.IntType(32))


@numba.njit(nogil=True, cache=True)
def _fill_uniforms(function: np.uint64, states: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    for j in range(rows.shape[0]):
        state = states[rows[j]]
        for i in range(out.shape[1]):
            out[j, i] = _next_double(function, state)


# numpy's `random_standard_normal`, `random_standard_exponential` and `random_standard_gamma`
# (numpy/random/src/distributions/distributions.c), step for step, so each draw consumes the
# stream and returns the value exactly as `Generator.normal` / `Generator.gamma` do.

@numba.njit(nogil=True, cache=True)
def _standard_normal(u64: np.uint64, f64: np.uint64, state: np.uint64) -> float:
    while True:
        r = _next_uint64(u64, state)
        idx = r & 0xFF
        r >>= 8
        sign = r & 0x1
        rabs = (r >> 1) & 0x000FFFFFFFFFFFFF
        x = rabs * wi_double[idx]
        if sign & 0x1:
            x = -x
        if rabs < ki_double[idx]:
            return x
        if idx == 0:
            while True:
                xx = -ziggurat_nor_inv_r * np.log1p(-_next_double(f64, state))
                yy = -np.log1p(-_next_double(f64, state))
                if yy + yy > xx * xx:
                    return -(ziggurat_nor_r + xx) if (rabs >> 8) & 0x1 else ziggurat_nor_r + xx
        elif (fi_double[idx - 1] - fi_double[idx]) * _next_double(f64, state) + fi_double[idx] < np.exp(-0.5 * x * x):
            return x


@numba.njit(nogil=True, cache=True)
def _standard_exponential(u64: np.uint64, f64: np.uint64, state: np.uint64) -> float:
    while True:
        ri = _next_uint64(u64, state)
        ri >>= 3
        idx = ri & 0xFF
        ri >>= 8
        x = ri * we_double[idx]
        if ri < ke_double[idx]:
            return x
        if idx == 0:
            return ziggurat_exp_r - np.log1p(-_next_double(f64, state))
        if (fe_double[idx - 1] - fe_double[idx]) * _next_double(f64, state) + fe_double[idx] < np.exp(-x):
            return x


@numba.njit(nogil=True, cache=True)
def _standard_gamma(u64: np.uint64, f64: np.uint64, state: np.uint64, shape: float) -> float:
    if shape == 1.0:
        return _standard_exponential(u64, f64, state)
    if shape == 0.0:
        return 0.0
    if shape < 1.0:
        while True:
            u = _next_double(f64, state)
            v = _standard_exponential(u64, f64, state)
            if u <= 1.0 - shape:
                x = u ** (1.0 / shape)
                if x <= v:
                    return x
            else:
                y = -np.log((1 - u) / shape)
                x = (1.0 - shape + shape * y) ** (1.0 / shape)
                if x <= v + y:
                    return x
    b = shape - 1.0 / 3.0
    c = 1.0 / np.sqrt(9 * b)
    while True:
        while True:
            x = _standard_normal(u64, f64, state)
            v = 1.0 + c * x
            if v > 0.0:
                break
        v = v * v * v
        u = _next_double(f64, state)
        if u < 1.0 - 0.0331 * (x * x) * (x * x):
            return b * v
        if np.log(u) < 0.5 * x * x + b * (1.0 - v + np.log(v)):
            return b * v


@numba.njit(nogil=True, cache=True)
def _fill_normals(u64: np.uint64, f64: np.uint64, states: np.ndarray, rows: np.ndarray, scale: float,
                  out: np.ndarray) -> None:
    for j in range(rows.shape[0]):
        out[j] = 0.0 + scale * _standard_normal(u64, f64, states[rows[j]])


@numba.njit(nogil=True, cache=True)
def _fill_churn_and_gap(u64: np.uint64, f64: np.uint64, states: np.ndarray, rows: np.ndarray, shape: float,
                        u: np.ndarray, gap: np.ndarray) -> None:
    for j in range(rows.shape[0]):
        state = states[rows[j]]
        u[j] = _next_double(f64, state)
        gap[j] = (1.0 / shape) * _standard_gamma(u64, f64, state, shape)


#: The trait distributions `profile_draws` knows, by code (`population._Dist`'s kinds): beta (a, b) with a > 1 or
#: b > 1 (numpy's two-Gamma case), uniform (low, high - low), normal (mean, std) clipped to [low, high], constant.
DRAW_BETA, DRAW_UNIFORM, DRAW_NORMAL, DRAW_CONSTANT = 0, 1, 2, 3


@numba.njit(nogil=True, cache=True)
def _bounded_uint32(u32: np.uint64, state: np.uint64, n: np.uint64) -> np.uint64:
    """numpy's `integers(n)` for 1 <= n <= 2**32 (`random_bounded_uint64_fill`: none drawn for n = 1, Lemire's
    rejection on the stream's 32-bit draws, which PCG64 serves half a 64-bit draw at a time, otherwise)."""
    rng = n - np.uint64(1)
    if rng == np.uint64(0):
        return np.uint64(0)
    if rng == np.uint64(0xFFFFFFFF):
        return np.uint64(_next_uint32(u32, state))
    m = np.uint64(_next_uint32(u32, state)) * n
    leftover = m & np.uint64(0xFFFFFFFF)
    if leftover < n:
        threshold = (np.uint64(0xFFFFFFFF) - rng) % n
        while leftover < threshold:
            m = np.uint64(_next_uint32(u32, state)) * n
            leftover = m & np.uint64(0xFFFFFFFF)
    return m >> np.uint64(32)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _choose_weighted(f64: np.uint64, state: np.uint64, odds: np.ndarray, cdf: np.ndarray, chosen: np.ndarray) -> None:
    """`Generator.choice(len(odds), len(chosen), replace=False, p=odds)` into `chosen` (at least that many odds
    non-zero), as `population._choose_topics` replays it: a round draws a uniform per index still missing and
    searches the CDF (`cdf` the first round's) as `bisect_right`, keeping new indices in the order drawn; the next
    round's CDF is the running sum, in order, of the odds with the found ones zeroed, each divided by the last."""
    k, n = chosen.shape[0], odds.shape[0]
    found = 0
    current = cdf
    x = np.empty(k)
    while found < k:
        m = k - found
        for i in range(m):
            x[i] = _next_double(f64, state)
        if found:
            sums = np.empty(n)
            for t in range(n):
                v = odds[t]
                for f in range(found):
                    if chosen[f] == t:
                        v = 0.0
                sums[t] = v if t == 0 else sums[t - 1] + v
            current = sums / sums[n - 1]
        for i in range(m):
            lo, hi = 0, n
            while lo < hi:
                mid = (lo + hi) // 2
                if x[i] < current[mid]:
                    hi = mid
                else:
                    lo = mid + 1
            new = True
            for f in range(found):
                if chosen[f] == lo:
                    new = False
            if new:
                chosen[found] = lo
                found += 1


@numba.njit(nogil=True, cache=True, error_model="numpy")  # C's division: Gammas all 0 give NaN, as numpy's
def _fill_profile(u64: np.uint64, f64: np.uint64, u32: np.uint64, state: np.uint64, odds: np.ndarray, cdf: np.ndarray,
                  chosen: np.ndarray, alpha: np.ndarray, options: np.ndarray, kinds: np.ndarray, params: np.ndarray,
                  weights: np.ndarray, picks: np.ndarray, traits: np.ndarray) -> None:
    if chosen.shape[0]:
        _choose_weighted(f64, state, odds, cdf, chosen)
    # `Generator.dirichlet` with alpha.max() >= 0.1: Gamma draws normalised by their sum's reciprocal
    acc = 0.0
    for j in range(alpha.shape[0]):
        weights[j] = _standard_gamma(u64, f64, state, alpha[j])
        acc = acc + weights[j]
    invacc = 1.0 / acc
    for j in range(alpha.shape[0]):
        weights[j] = weights[j] * invacc
    for a in range(options.shape[0]):
        picks[a] = _bounded_uint32(u32, state, options[a])
    for t in range(kinds.shape[0]):
        kind = kinds[t]
        if kind == DRAW_BETA:
            ga = _standard_gamma(u64, f64, state, params[t, 0])
            gb = _standard_gamma(u64, f64, state, params[t, 1])
            x = ga / (ga + gb)
        elif kind == DRAW_UNIFORM:
            x = params[t, 0] + params[t, 1] * _next_double(f64, state)
        elif kind == DRAW_NORMAL:
            x = params[t, 0] + params[t, 1] * _standard_normal(u64, f64, state)
            x = x if x > params[t, 2] else params[t, 2]
            x = x if x < params[t, 3] else params[t, 3]
        else:
            x = params[t, 0]
        traits[t] = x


_NO_TOPICS = (np.zeros(0), np.zeros(0))


def profile_draws(generator: np.random.Generator, alpha: np.ndarray, options: np.ndarray, kinds: np.ndarray,
                  params: np.ndarray, topics: tuple[np.ndarray, np.ndarray] | None = None,
                  ) -> tuple[list[int], list[float], list[int], list[float]] | None:
    """A drawn user's numbers in one compiled call, as `generator`'s own calls draw them in this order: with
    `topics` (odds, their CDF), len(alpha) of them by `choice(len(odds), len(alpha), replace=False, p=odds)`
    (at least that many odds non-zero; otherwise none, []), then `dirichlet(alpha)` (alpha.max() >= 0.1),
    `integers(n)` for each n of `options` (each 1 <= n < 2**32), then each trait (`kinds[t]`, `params[t]`:
    `DRAW_BETA` and the others). None when `generator` is not on PCG64: the caller draws through it instead."""
    state = _state_address(generator)
    if not state:
        return None
    odds, cdf = _NO_TOPICS if topics is None else topics
    chosen = np.empty(0 if topics is None else len(alpha), dtype=np.int64)
    weights, picks, traits = np.empty(len(alpha)), np.empty(len(options), dtype=np.uint64), np.empty(len(kinds))
    _fill_profile(_PCG64_NEXT_UINT64, _PCG64_NEXT_DOUBLE, _PCG64_NEXT_UINT32, state, odds, cdf, chosen, alpha,
                  options, kinds, params, weights, picks, traits)
    return chosen.tolist(), weights.tolist(), picks.tolist(), traits.tolist()


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

    def _compiled(self, rows: np.ndarray) -> np.ndarray | None:
        """The state pointers, when every stream of `rows` can be drawn by the compiled loops."""
        if self._states is None:
            self._states = np.array([_state_address(g) for g in self._generators], dtype=np.uint64)
        return self._states if len(rows) and self._states[rows].all() else None

    def random(self, rows: np.ndarray | Sequence[int], shape: int | tuple[int, ...] = ()) -> np.ndarray:
        """(len(rows), *shape) uniforms in [0, 1): row j from stream `rows[j]`."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *shape))
        states = self._compiled(rows)
        if states is not None:
            _fill_uniforms(_PCG64_NEXT_DOUBLE, states, rows, out.reshape(len(rows), -1))
        else:
            gens = self._generators
            for j, r in enumerate(rows.tolist()):
                out[j] = gens[r].random(shape)
        return out

    def logistic(self, rows: np.ndarray | Sequence[int], shape: int | tuple[int, ...] = ()) -> np.ndarray:
        """Standard logistic noise: `u + noise > 0` happens with probability sigmoid(u)."""
        p = self.random(rows, shape)
        noise = np.log(p)
        p = np.negative(p, out=p)  # log(p) - log1p(-p), the same passes, without their temporaries
        return np.subtract(noise, np.log1p(p, out=p), out=noise)

    def normal(self, rows: np.ndarray | Sequence[int], scale: float = 1.0) -> np.ndarray:
        """(len(rows),) normal draws with mean 0 and standard deviation `scale`."""
        rows = np.asarray(rows, dtype=np.int64)
        states = self._compiled(rows)
        if states is None:
            gens = self._generators
            return np.array([gens[r].normal(0.0, scale) for r in rows.tolist()], dtype=np.float64)
        out = np.empty(len(rows))
        _fill_normals(_PCG64_NEXT_UINT64, _PCG64_NEXT_DOUBLE, states, rows, float(scale), out)
        return out

    def churn_and_gap(self, rows: np.ndarray | Sequence[int], gap_shape: float) -> tuple[np.ndarray, np.ndarray]:
        """Per row a churn uniform and a unit-mean Gamma(`gap_shape`) gap: a session end's draws."""
        rows = np.asarray(rows, dtype=np.int64)
        u = np.empty(len(rows))
        g = np.empty(len(rows))
        states = self._compiled(rows)
        if states is not None:
            _fill_churn_and_gap(_PCG64_NEXT_UINT64, _PCG64_NEXT_DOUBLE, states, rows, float(gap_shape), u, g)
            return u, g
        gens = self._generators
        for j, r in enumerate(rows.tolist()):
            u[j] = gens[r].random()
            g[j] = gens[r].gamma(gap_shape, 1.0 / gap_shape)
        return u, g
