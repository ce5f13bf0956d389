"""Time-varying kernels: the DF-I section cascade and the TPT state-variable filter against
independent float64 loops, scipy, the bilinear transform, each other and finite differences."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.signal
import torch
from torch.autograd import gradcheck, gradgradcheck

from diffx.kernels.varying import (
    SVF_MODES,
    sos_cascade_varying,
    state_space2,
    svf,
    svf_state_space,
)
from tests.kernels.test_iir import random_sections

BACKENDS = ["numba", "torch"]


def swept_sections(batch: int, n_sections: int, samples: int, seed: int = 0) -> np.ndarray:
    """(batch, K, 5, T) coefficients whose complex pole pair and zeros move along smooth paths,
    every frozen section stable (radius <= 0.95)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, samples)
    out = np.empty((batch, n_sections, 5, samples))
    for b, k in itertools.product(range(batch), range(n_sections)):
        r0, r1 = rng.uniform(0.3, 0.95, size=2)
        th0, th1 = rng.uniform(0.05, 3.0, size=2)
        radius = r0 + (r1 - r0) * t
        angle = th0 + (th1 - th0) * t + 0.3 * np.sin(2 * np.pi * rng.uniform(1, 4) * t)
        out[b, k, 0] = rng.normal() + 0.3 * np.sin(7 * t)
        out[b, k, 1] = rng.normal() + 0.2 * t
        out[b, k, 2] = rng.normal() * (1 - t)
        out[b, k, 3] = -2 * radius * np.cos(angle)
        out[b, k, 4] = radius**2
    return out


def df1_oracle(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Float64 per-sample loop of the stated recursion; x (B, C, T), coef (B, K, 5, T)."""
    B, C, T = x.shape
    out = np.empty_like(x)
    for b, c in itertools.product(range(B), range(C)):
        u = x[b, c].astype(np.float64)
        for k in range(coef.shape[1]):
            b0, b1, b2, a1, a2 = coef[b, k]
            v = np.zeros(T)
            for n in range(T):
                u1 = u[n - 1] if n >= 1 else 0.0
                u2 = u[n - 2] if n >= 2 else 0.0
                v1 = v[n - 1] if n >= 1 else 0.0
                v2 = v[n - 2] if n >= 2 else 0.0
                v[n] = b0[n] * u[n] + b1[n] * u1 + b2[n] * u2 - a1[n] * v1 - a2[n] * v2
            u = v
        out[b, c] = u
    return out


def svf_oracle(x: np.ndarray, g: np.ndarray, k: np.ndarray, mode: str) -> np.ndarray:
    """Zavalishin's TPT SVF, float64, written out per sample; x (B, C, T), g and k (B, T)."""
    B, C, T = x.shape
    out = np.empty_like(x, dtype=np.float64)
    for b, c in itertools.product(range(B), range(C)):
        s1 = s2 = 0.0
        for n in range(T):
            hp = (x[b, c, n] - (2 * (k[b, n] / 2) + g[b, n]) * s1 - s2) / (
                1 + 2 * (k[b, n] / 2) * g[b, n] + g[b, n] ** 2
            )
            bp = g[b, n] * hp + s1
            lp = g[b, n] * bp + s2
            s1 = 2 * bp - s1
            s2 = 2 * lp - s2
            out[b, c, n] = {"lowpass": lp, "bandpass": bp, "highpass": hp}[mode]
    return out


def svf_params(batch: int, samples: int, seed: int = 0):
    """Swept g (cutoff 0.2 %..45 % of fs) and k (Q 0.3..20) trajectories, float64 (B, T)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, samples)
    frac = np.exp(np.log(0.002) + (np.log(0.45) - np.log(0.002)) * (
        0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 3, size=(batch, 1)) * t)))  # fmt: skip
    q = np.exp(rng.uniform(np.log(0.3), np.log(20), size=(batch, 1)) * (1 - 0.5 * t))
    return torch.from_numpy(np.tan(np.pi * frac)), torch.from_numpy(1 / q)


# --------------------------------------------------------------------------------------------
# DF-I cascade


@pytest.mark.parametrize("backend", BACKENDS)
def test_cascade_matches_independent_loop(backend):
    coef = swept_sections(2, 3, 300, seed=1)
    x = np.random.default_rng(2).normal(size=(2, 2, 300))
    y = sos_cascade_varying(torch.from_numpy(x), torch.from_numpy(coef), backend)
    np.testing.assert_allclose(y.numpy(), df1_oracle(x, coef), rtol=0, atol=1e-11)


@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_coefficients_equal_scipy_sosfilt(backend):
    sections = random_sections(2, 3, seed=4)  # (B, K, 5)
    T = 500
    coef = np.repeat(sections[..., None], T, axis=-1)
    x = np.random.default_rng(3).normal(size=(2, 1, T))
    y = sos_cascade_varying(torch.from_numpy(x), torch.from_numpy(coef), backend)
    for b in range(2):
        sos = np.concatenate([sections[b, :, :3], np.ones((3, 1)), sections[b, :, 3:]], -1)
        np.testing.assert_allclose(y[b, 0].numpy(), scipy.signal.sosfilt(sos, x[b, 0]),
                                   rtol=0, atol=1e-10)  # fmt: skip


def test_float32_audio_with_float64_coefficients():
    coef = swept_sections(2, 2, 2000, seed=5)
    x = np.random.default_rng(6).normal(size=(2, 1, 2000))
    y = sos_cascade_varying(torch.from_numpy(x).float(), torch.from_numpy(coef), "numba")
    ref = df1_oracle(x.astype(np.float32).astype(np.float64), coef)
    assert y.dtype == torch.float32
    assert np.abs(y.double().numpy() - ref).max() / np.abs(ref).max() < 1e-6


def test_cascade_input_gradient_is_the_transposed_response_matrix():
    """dL/dx = H^T g, with H[n, m] the response at n to an impulse at m (oracle-built)."""
    T = 60
    coef = swept_sections(1, 2, T, seed=7)
    H = np.stack([df1_oracle(np.eye(T)[m][None, None], coef)[0, 0] for m in range(T)], axis=1)
    g = np.random.default_rng(8).normal(size=T)
    for backend in BACKENDS:
        x = torch.zeros(1, 1, T, dtype=torch.float64, requires_grad=True)
        (sos_cascade_varying(x, torch.from_numpy(coef), backend) * torch.from_numpy(g)).sum(
        ).backward()  # fmt: skip
        np.testing.assert_allclose(x.grad[0, 0].numpy(), H.T @ g, rtol=0, atol=1e-11)


def test_cascade_coefficient_gradient_formulas():
    """dL/db_i[n] = w[n] u[n-i] and dL/da_i[n] = -w[n] v[n-i], w = H^T g for one section."""
    T = 50
    coef = swept_sections(1, 1, T, seed=9)
    x = np.random.default_rng(10).normal(size=(1, 1, T))
    g = np.random.default_rng(11).normal(size=T)
    # w[n] = dL/dv[n]: the response of v to a unit push of v[n] is the all-pole part from n on.
    allpole = coef.copy()
    allpole[0, 0, :3] = 0.0
    allpole[0, 0, 0] = 1.0
    G = np.stack([df1_oracle(np.eye(T)[m][None, None], allpole)[0, 0] for m in range(T)], 1)
    w = G.T @ g
    u = x[0, 0]
    v = df1_oracle(x, coef)[0, 0]

    def lag(s, i):
        return np.concatenate([np.zeros(i), s[: T - i]])

    expected = np.stack([w * u, w * lag(u, 1), w * lag(u, 2), -w * lag(v, 1), -w * lag(v, 2)])
    for backend in BACKENDS:
        c = torch.from_numpy(coef).requires_grad_()
        (sos_cascade_varying(torch.from_numpy(x), c, backend) * torch.from_numpy(g)).sum(
        ).backward()  # fmt: skip
        np.testing.assert_allclose(c.grad[0, 0].numpy(), expected, rtol=0, atol=1e-11)


def test_cascade_backends_agree_on_gradients_and_channels_sum():
    coef = torch.from_numpy(swept_sections(2, 2, 400, seed=12))
    x = torch.randn(2, 3, 400, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    weight = torch.randn(2, 3, 400, dtype=torch.float64)
    grads = {}
    for backend in BACKENDS:
        xs, cs = x.clone().requires_grad_(), coef.clone().requires_grad_()
        (sos_cascade_varying(xs, cs, backend) * weight).sum().backward()
        grads[backend] = (xs.grad, cs.grad)
    for a, b in zip(grads["numba"], grads["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # The channels' coefficient gradients add up (one trajectory per item).
    per_channel = []
    for c in range(3):
        cs = coef.clone().requires_grad_()
        (sos_cascade_varying(x[:, c : c + 1], cs) * weight[:, c : c + 1]).sum().backward()
        per_channel.append(cs.grad)
    torch.testing.assert_close(sum(per_channel), grads["numba"][1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("needs", [(True, False), (False, True), (True, True)])
def test_cascade_gradcheck_and_gradgradcheck(backend, needs):
    coef = torch.from_numpy(swept_sections(2, 2, 14, seed=13)).requires_grad_(needs[1])
    x = torch.randn(2, 2, 14, dtype=torch.float64).requires_grad_(needs[0])

    def fn(a, b):
        return sos_cascade_varying(a, b, backend)

    assert gradcheck(fn, (x, coef))
    assert gradgradcheck(fn, (x, coef))


def test_cascade_batch_consistency():
    coef = torch.from_numpy(swept_sections(3, 2, 200, seed=14))
    x = torch.randn(3, 2, 200, dtype=torch.float64)
    batched = sos_cascade_varying(x, coef)
    for b in range(3):
        torch.testing.assert_close(batched[b : b + 1], sos_cascade_varying(x[b : b + 1],
                                   coef[b : b + 1]), rtol=0, atol=0)  # fmt: skip


def test_cascade_output_can_be_edited_in_place():
    coef = torch.from_numpy(swept_sections(1, 2, 50, seed=15)).requires_grad_()
    x = torch.randn(1, 1, 50, dtype=torch.float64)
    sos_cascade_varying(x, coef).sum().backward()
    expected, coef.grad = coef.grad.clone(), None
    y = sos_cascade_varying(x, coef)
    loss = y.sum()
    y.mul_(0.0)
    loss.backward()
    torch.testing.assert_close(coef.grad, expected)


def test_cascade_bad_shapes_and_backend():
    x = torch.zeros(1, 1, 8)
    with pytest.raises(ValueError, match="coef"):
        sos_cascade_varying(x, torch.zeros(1, 1, 5, 7))
    with pytest.raises(ValueError, match="coef"):
        sos_cascade_varying(x, torch.zeros(1, 0, 5, 8))
    with pytest.raises(ValueError, match="x"):
        sos_cascade_varying(torch.zeros(1, 8), torch.zeros(1, 1, 5, 8))
    with pytest.raises(ValueError, match="backend"):
        sos_cascade_varying(x, torch.zeros(1, 1, 5, 8), "scan")


# --------------------------------------------------------------------------------------------
# TPT state-variable filter


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", SVF_MODES)
def test_svf_matches_independent_loop(backend, mode):
    g, k = svf_params(2, 400, seed=1)
    x = np.random.default_rng(3).normal(size=(2, 2, 400))
    y = svf(torch.from_numpy(x), g, k, mode, backend)
    np.testing.assert_allclose(y.numpy(), svf_oracle(x, g.numpy(), k.numpy(), mode),
                               rtol=0, atol=1e-11)  # fmt: skip


@pytest.mark.parametrize("mode", SVF_MODES)
def test_constant_svf_is_the_prewarped_bilinear_transform(mode):
    """TPT is exactly the BLT: lfilter of the analog prototype mapped by scipy's bilinear."""
    fs, fc, q = 48000.0, 1234.0, 2.5
    k = 1 / q
    wc = 2 * fs * math.tan(math.pi * fc / fs)  # prewarped analog cutoff, rad/s
    den = [1 / wc**2, k / wc, 1.0]
    num = {"lowpass": [1.0], "bandpass": [1 / wc, 0.0], "highpass": [1 / wc**2, 0.0, 0.0]}[mode]
    bz, az = scipy.signal.bilinear(num, den, fs)
    x = np.random.default_rng(4).normal(size=(1, 1, 3000))
    T = x.shape[-1]
    g = torch.full((1, T), math.tan(math.pi * fc / fs), dtype=torch.float64)
    y = svf(torch.from_numpy(x), g, torch.full((1, T), k, dtype=torch.float64), mode)
    np.testing.assert_allclose(y[0, 0].numpy(), scipy.signal.lfilter(bz, az, x[0, 0]),
                               rtol=0, atol=1e-10)  # fmt: skip


@pytest.mark.parametrize("mode", SVF_MODES)
def test_svf_equals_its_state_space_form(mode):
    g, k = svf_params(2, 300, seed=5)
    x = torch.randn(2, 2, 300, dtype=torch.float64)
    coef = svf_state_space(g, k, SVF_MODES.index(mode))
    for backend in BACKENDS:
        torch.testing.assert_close(svf(x, g, k, mode, backend), state_space2(x, coef, backend),
                                   rtol=0, atol=1e-11)  # fmt: skip


@pytest.mark.parametrize("mode", SVF_MODES)
def test_svf_fused_adjoint_agrees_with_state_space_adjoint(mode):
    """The numba kernel's hand-chained gradients against the reference back end, whose
    backward runs the generic state-space adjoint and autograd of the coefficient formulas."""
    g, k = svf_params(2, 500, seed=6)
    x = torch.randn(2, 2, 500, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    weight = torch.randn(2, 2, 500, dtype=torch.float64)
    grads = {}
    for backend in BACKENDS:
        leaves = [t.clone().requires_grad_() for t in (x, g, k)]
        (svf(*leaves, mode, backend) * weight).sum().backward()
        grads[backend] = [t.grad for t in leaves]
    for a, b in zip(grads["numba"], grads["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", SVF_MODES)
def test_svf_gradcheck_and_gradgradcheck(backend, mode):
    g, k = svf_params(1, 10, seed=7)
    x = torch.randn(1, 2, 10, dtype=torch.float64, requires_grad=True)
    g.requires_grad_()
    k.requires_grad_()

    def fn(a, b, c):
        return svf(a, b, c, mode, backend)

    assert gradcheck(fn, (x, g, k))
    assert gradgradcheck(fn, (x, g, k))


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False),
                                   (False, False, True)])  # fmt: skip
def test_svf_gradcheck_each_input_alone(needs):
    g, k = svf_params(1, 10, seed=8)
    x = torch.randn(1, 1, 10, dtype=torch.float64)
    inputs = [t.clone().requires_grad_(n) for t, n in zip((x, g, k), needs)]
    assert gradcheck(lambda a, b, c: svf(a, b, c, "bandpass"), inputs)
    assert gradgradcheck(lambda a, b, c: svf(a, b, c, "bandpass"), inputs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_space_gradcheck_and_gradgradcheck(backend):
    g, k = svf_params(1, 10, seed=9)
    coef = svf_state_space(g, k, 0) + 0.01 * torch.randn(1, 9, 10, dtype=torch.float64)
    coef.requires_grad_()
    x = torch.randn(1, 2, 10, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda a, b: state_space2(a, b, backend), (x, coef))
    assert gradgradcheck(lambda a, b: state_space2(a, b, backend), (x, coef))


def test_svf_batch_consistency_and_float32():
    g, k = svf_params(3, 800, seed=10)
    x = torch.randn(3, 2, 800, dtype=torch.float64)
    batched = svf(x, g, k, "lowpass")
    for b in range(3):
        torch.testing.assert_close(batched[b : b + 1], svf(x[b : b + 1], g[b : b + 1],
                                   k[b : b + 1], "lowpass"), rtol=0, atol=0)  # fmt: skip
    y32 = svf(x.float(), g, k, "lowpass")
    assert y32.dtype == torch.float32
    ref = svf(x.float().double(), g, k, "lowpass")
    assert float((y32.double() - ref).abs().max() / ref.abs().max()) < 1e-6


def test_svf_bad_arguments():
    x = torch.zeros(1, 1, 8)
    g = torch.ones(1, 8)
    with pytest.raises(ValueError, match="mode"):
        svf(x, g, g, "notch")
    with pytest.raises(ValueError, match="g"):
        svf(x, torch.ones(1, 7), g, "lowpass")
    with pytest.raises(ValueError, match="k"):
        svf(x, g, torch.ones(2, 8), "lowpass")
    with pytest.raises(ValueError, match="backend"):
        svf(x, g, g, "lowpass", "cuda")


def test_threaded_results_equal_the_single_thread_results():
    """Items run in parallel (diffx.kernels.threads); each item and its channels stay on one
    thread, so the result and the channel-summed gradients do not depend on the threads."""
    from diffx.kernels.threads import MIN_SAMPLES_PER_THREAD, thread_count

    T = 2 * MIN_SAMPLES_PER_THREAD
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2, T, generator=gen) * 0.5
    coef = torch.from_numpy(swept_sections(4, 2, T, seed=16))
    g, k = svf_params(4, T, seed=17)

    def run():
        xs, cs, gs, ks = (t.clone().requires_grad_() for t in (x, coef, g, k))
        y1 = sos_cascade_varying(xs, cs)
        y2 = svf(xs, gs, ks, "bandpass")
        (y1.square().sum() + y2.square().sum()).backward()
        return y1.detach(), y2.detach(), xs.grad, cs.grad, gs.grad, ks.grad

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = run()
        torch.set_num_threads(2)
        assert thread_count(4, x.numel()) == 2
        threaded = run()
    finally:
        torch.set_num_threads(before)
    for s, t in zip(serial, threaded):
        torch.testing.assert_close(t, s, rtol=0, atol=0)
