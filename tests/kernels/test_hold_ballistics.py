"""Tests for the ballistics-with-hold kernel (noise gates) against a numpy loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from diffx.kernels.ballistics import (
    BRANCH_ATTACK,
    BRANCH_HOLD,
    BRANCH_RELEASE,
    attack_release,
    hold_attack_release,
)

CPU_BACKENDS = ["numba", "torch"]


def _numpy_hold(g, is_open, aa, ar, hold):
    """Independent oracle of the stated recursion: release waits ``hold`` samples after the
    last open sample; attack (target below the state) is never held."""
    y = np.zeros(g.shape)
    codes = np.zeros(g.shape, dtype=np.int64)
    for r in range(g.shape[0]):
        state, since = 0.0, hold[r] + 1
        for n in range(g.shape[1]):
            since = 0 if is_open[r, n] else min(since + 1, hold[r] + 1)
            if g[r, n] < state:
                state = aa[r] * state + (1 - aa[r]) * g[r, n]
                codes[r, n] = BRANCH_ATTACK
            elif since <= hold[r]:
                codes[r, n] = BRANCH_HOLD
            else:
                state = ar[r] * state + (1 - ar[r]) * g[r, n]
                codes[r, n] = BRANCH_RELEASE
            y[r, n] = state
    return y, codes


def _random(rows=3, samples=60, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    g = (-30 * torch.rand(rows, samples, generator=gen, dtype=torch.float64)).to(dtype)
    is_open = torch.rand(rows, samples, generator=gen) > 0.8
    aa = torch.linspace(0.2, 0.7, rows, dtype=dtype)
    ar = torch.linspace(0.8, 0.97, rows, dtype=dtype)
    hold = torch.arange(rows, dtype=torch.int64) * 3 + 1
    return g, is_open, aa, ar, hold


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_matches_numpy_loop(backend, dtype):
    g, is_open, aa, ar, hold = _random(dtype=dtype)
    y, codes = hold_attack_release(g, is_open, aa, ar, hold, backend, return_branches=True)
    assert y.dtype == dtype and codes.dtype == torch.int8
    ref, ref_codes = _numpy_hold(
        g.double().numpy(), is_open.numpy(), aa.double().numpy(), ar.double().numpy(),
        hold.numpy(),
    )  # fmt: skip
    tol = 1e-4 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(y.double().numpy(), ref, rtol=tol, atol=tol)
    if dtype == torch.float64:
        np.testing.assert_array_equal(codes.numpy(), ref_codes)
        assert {BRANCH_ATTACK, BRANCH_HOLD, BRANCH_RELEASE} <= set(ref_codes.ravel().tolist())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_hold_then_release_closed_form(backend):
    """Open for 10 samples (target 0), then a target of +20 (a rise: the release branch, as a
    gate's negated gain when it closes): the state holds at 0 for exactly ``hold`` samples
    after the last open sample, then releases geometrically."""
    hold, n_open, n_after = 7, 10, 30
    g = torch.cat([torch.zeros(n_open), torch.full((n_after,), 20.0)]).double()[None]
    is_open = torch.zeros(1, n_open + n_after, dtype=torch.bool)
    is_open[0, :n_open] = True
    ar = torch.tensor([0.9], dtype=torch.float64)
    y = hold_attack_release(g, is_open, torch.tensor([0.5]).double(), ar,
                            torch.tensor([hold]), backend)[0]  # fmt: skip
    assert torch.equal(y[: n_open + hold], torch.zeros(n_open + hold, dtype=torch.float64))
    k = torch.arange(n_after - hold, dtype=torch.float64)
    torch.testing.assert_close(y[n_open + hold :], 20.0 * (1 - 0.9 ** (k + 1)))


def test_open_again_restarts_hold():
    """Open samples every 5 samples with hold 5: release never starts."""
    g = torch.full((1, 60), 30.0, dtype=torch.float64)
    is_open = torch.zeros(1, 60, dtype=torch.bool)
    is_open[0, ::5] = True
    y = hold_attack_release(g, is_open, torch.tensor([0.5]).double(),
                            torch.tensor([0.9]).double(), torch.tensor([5]))  # fmt: skip
    assert torch.equal(y, torch.zeros_like(y))


def test_zero_hold_is_attack_release():
    g, is_open, aa, ar, _ = _random()
    y = hold_attack_release(g, is_open, aa, ar, torch.zeros(3, dtype=torch.int64))
    # With no hold, only the open samples themselves are held (since = 0 <= 0): with nothing
    # open it is exactly attack_release.
    y_closed = hold_attack_release(g, torch.zeros_like(is_open), aa, ar,
                                   torch.zeros(3, dtype=torch.int64))  # fmt: skip
    torch.testing.assert_close(y_closed, attack_release(g, aa, ar), rtol=1e-12, atol=1e-12)
    assert not torch.equal(y, y_closed)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    "needs", [c for c in itertools.product([False, True], repeat=3) if any(c)], ids=str
)
def test_gradcheck_every_combination(backend, needs):
    g, is_open, aa, ar, hold = _random(rows=2, samples=24)
    inputs = [t.requires_grad_(need) for t, need in zip((g, aa, ar), needs)]

    def fn(g, aa, ar):
        return hold_attack_release(g, is_open, aa, ar, hold, backend)

    assert gradcheck(fn, tuple(inputs))
    assert gradgradcheck(fn, tuple(inputs))


def test_backends_agree_values_and_gradients(dtype):
    g, is_open, aa, ar, hold = _random(rows=4, samples=300, dtype=dtype)
    outs = {}
    for backend in CPU_BACKENDS:
        inputs = [t.clone().requires_grad_() for t in (g, aa, ar)]
        y = hold_attack_release(inputs[0], is_open, inputs[1], inputs[2], hold, backend)
        (y * torch.linspace(-1, 1, 300, dtype=dtype)).sum().backward()
        outs[backend] = (y.detach(), *(t.grad for t in inputs))
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for ref, got in zip(outs["torch"], outs["numba"]):
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol)


def test_long_rows_threaded_match_reference():
    """Long enough for several threads (diffx.kernels.threads), against the numpy oracle."""
    gen = torch.Generator().manual_seed(5)
    g = -40 * torch.rand(3, 70000, generator=gen, dtype=torch.float64)
    is_open = torch.rand(3, 70000, generator=gen) > 0.99
    aa, ar = torch.tensor([0.3, 0.5, 0.1]).double(), torch.tensor([0.99, 0.9, 0.999]).double()
    hold = torch.tensor([100, 0, 1000])
    y = hold_attack_release(g, is_open, aa, ar, hold, "numba")
    ref, _ = _numpy_hold(g.numpy(), is_open.numpy(), aa.numpy(), ar.numpy(), hold.numpy())
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-10)


def test_bad_inputs():
    g, is_open, aa, ar, hold = _random()
    with pytest.raises(ValueError, match="gain_db"):
        hold_attack_release(g[0], is_open, aa, ar, hold)
    with pytest.raises(ValueError, match="is_open"):
        hold_attack_release(g, is_open.float(), aa, ar, hold)
    with pytest.raises(ValueError, match="alpha_attack"):
        hold_attack_release(g, is_open, aa[:2], ar, hold)
    with pytest.raises(ValueError, match="alpha_release"):
        hold_attack_release(g, is_open, aa, ar.float(), hold)
    with pytest.raises(ValueError, match="hold_samples"):
        hold_attack_release(g, is_open, aa, ar, hold.double())
    with pytest.raises(ValueError, match="backend"):
        hold_attack_release(g, is_open, aa, ar, hold, backend="jax")
