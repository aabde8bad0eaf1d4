"""Per-user streams: the compiled draws are exactly each user's own generator's draws."""

from __future__ import annotations

import numpy as np

from recoworld.streams import UserStreams


def test_batched_uniforms_are_each_rows_own_generator_draws() -> None:
    streams = UserStreams([np.random.default_rng(seed) for seed in range(6)])
    rows = np.array([4, 0, 4, 2])  # a row may draw twice in one call: its draws follow on
    got = streams.random(rows, (3, 5))
    alone = [np.random.default_rng(seed) for seed in range(6)]
    expected = np.stack([alone[r].random((3, 5)) for r in rows.tolist()])
    assert np.array_equal(got, expected)
    # The streams moved on as the generators' own calls would have.
    assert np.array_equal(streams[4].random(2), alone[4].random(2))
    assert np.array_equal(streams.random([1], 4)[0], alone[1].random(4))


def test_a_replaced_stream_is_drawn_from_and_other_bit_generators_still_work() -> None:
    streams = UserStreams([np.random.default_rng(seed) for seed in range(3)])
    streams.random([0, 1, 2], 2)  # the compiled path is set up for the original generators
    streams[1] = np.random.default_rng(99)
    streams[2] = np.random.Generator(np.random.MT19937(7))  # not PCG64: drawn through the generator itself
    got = streams.random([0, 1, 2], 3)
    first = np.random.default_rng(0)
    first.random(2)
    assert np.array_equal(got[0], first.random(3))
    assert np.array_equal(got[1], np.random.default_rng(99).random(3))
    assert np.array_equal(got[2], np.random.Generator(np.random.MT19937(7)).random(3))
    assert streams.random([], 4).shape == (0, 4)
    assert streams.random([0, 1], ()).shape == (2,)


def test_logistic_noise_is_the_logit_of_the_same_uniforms() -> None:
    p = np.random.default_rng(3).random((2, 3))
    noise = UserStreams([np.random.default_rng(3)]).logistic([0], (2, 3))
    assert noise.shape == (1, 2, 3)
    assert np.array_equal(noise[0], np.log(p) - np.log1p(-p))


def test_batched_normal_and_gamma_draws_are_each_rows_own_generator_draws() -> None:
    # 3,000 streams per shape reach the ziggurats' wedge steps (about 1% of draws) and Gamma's three
    # algorithms (shape < 1, = 1, > 1); one stream is not PCG64, which sends the call per user.
    n = 3_000
    for shape in (0.5, 1.0, 2.5):
        streams = UserStreams([np.random.default_rng(seed) for seed in range(n)])
        alone = [np.random.default_rng(seed) for seed in range(n)]
        rows = np.arange(n)
        u, gap = streams.churn_and_gap(rows, shape)
        z = streams.normal(rows, 0.3)
        expected = np.array([(g.random(), g.gamma(shape, 1.0 / shape), g.normal(0.0, 0.3)) for g in alone])
        assert np.array_equal(u, expected[:, 0])
        assert np.array_equal(gap, expected[:, 1])
        assert np.array_equal(z, expected[:, 2])
        assert all(streams[r].random() == alone[r].random() for r in range(0, n, 97))
    mixed = UserStreams([np.random.default_rng(0), np.random.Generator(np.random.MT19937(1))])
    u, gap = mixed.churn_and_gap([1, 0], 0.5)
    first, second = np.random.default_rng(0), np.random.Generator(np.random.MT19937(1))
    assert np.array_equal(u, [second.random(), first.random()])
    assert np.array_equal(gap, [second.gamma(0.5, 2.0), first.gamma(0.5, 2.0)])
    assert mixed.normal([], 1.0).shape == (0,)


def test_a_profiles_compiled_draws_are_its_generators_own_calls() -> None:
    """`profile_draws` replays dirichlet, integers (32-bit draws, half a 64-bit draw each, the leftover half kept
    for the next call) and each trait kind's draw, in order; thousands of streams reach the Gamma, normal and
    Lemire rejection steps. A generator not on PCG64 gets None (its caller draws through it)."""
    from recoworld.streams import DRAW_BETA, DRAW_CONSTANT, DRAW_NORMAL, DRAW_UNIFORM, profile_draws

    cases = [  # (alpha, options, traits as (kind, params))
        (np.full(3, 1.0), [6, 9, 5, 10], [(DRAW_BETA, (2.0, 3.0)), (DRAW_NORMAL, (25.0, 8.0, 5.0, 80.0)),
                                          (DRAW_UNIFORM, (1.0, 4.0)), (DRAW_CONSTANT, (0.5,))]),
        (np.full(5, 0.7), [1, 2**31 + 5, 3, 2**32 - 1, 2**32], [(DRAW_BETA, (0.5, 1.5)),
                                                               (DRAW_NORMAL, (0.0, 1e308, -np.inf, 2.0))]),
        (np.full(1, 30.0), [], [(DRAW_NORMAL, (-0.0, 0.0, -np.inf, np.inf))]),
    ]
    for alpha, options, traits in cases:
        kinds = np.array([kind for kind, _ in traits], dtype=np.int64)
        params = np.array([list(p) + [0.0] * (4 - len(p)) for _, p in traits])
        for seed in range(2_000):
            ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
            drawn = profile_draws(ours, alpha, np.array(options, dtype=np.uint64), kinds, params)
            assert drawn is not None
            chosen, weights, picks, values = drawn
            assert chosen == []
            assert weights == theirs.dirichlet(alpha).tolist()
            assert picks == [int(theirs.integers(n)) for n in options]
            expected = []
            for kind, p in traits:
                if kind == DRAW_BETA:
                    expected.append(float(theirs.beta(*p)))
                elif kind == DRAW_UNIFORM:
                    expected.append(float(theirs.uniform(p[0], p[0] + p[1])))
                elif kind == DRAW_NORMAL:
                    with np.errstate(over="ignore"):
                        expected.append(float(np.clip(theirs.normal(p[0], p[1]), p[2], p[3])))
                else:
                    expected.append(p[0])
            assert values == expected
            assert ours.integers(7, size=3).tolist() == theirs.integers(7, size=3).tolist()
            assert ours.random() == theirs.random()
    other = np.random.Generator(np.random.MT19937(0))
    assert profile_draws(other, np.ones(2), np.ones(1, dtype=np.uint64), np.zeros(0, dtype=np.int64),
                         np.zeros((0, 4))) is None


def test_a_profiles_compiled_favourites_are_numpys_weighted_choice() -> None:
    """With topic odds, `profile_draws` first draws len(alpha) indices as `choice(n, k, replace=False, p=odds)`
    does (`population._choose_topics`' rounds), also when a round draws an index twice and more rounds follow
    (k near the number of non-zero odds), then the rest of the user's numbers."""
    from recoworld.streams import profile_draws

    odds = np.random.default_rng(0).random(24) ** 3
    odds[[3, 7]] = 0.0
    odds /= odds.sum()
    cdf = np.cumsum(odds)
    cdf /= cdf[-1]
    none = np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), np.zeros((0, 4))
    for k in (1, 3, 5, 21, 22):
        for seed in range(300):
            ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
            drawn = profile_draws(ours, np.ones(k), *none, topics=(odds, cdf))
            assert drawn is not None
            assert drawn[0] == theirs.choice(24, k, replace=False, p=odds).tolist()
            assert drawn[1] == theirs.dirichlet(np.ones(k)).tolist()
            assert ours.random() == theirs.random()
