"""Allpass cascades (Bargum et al., DiffAPF) against scipy and the closed-form definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.signal
import torch
from torch.autograd import gradcheck, gradgradcheck

from diffx.functional.allpass import (
    KINDS,
    allpass_cascade,
    allpass_sos,
    first_order_allpass_sos,
    group_delay,
    phase_response,
    second_order_allpass_sos,
    stretched_allpass_sos,
)

SR = 48000.0
F64 = torch.float64


def random_params(kind: str, batch: int, n_second: int, n_first: int, seed: int):
    """Random in-range parameters for ``kind`` (float64), as keyword arguments."""
    g = torch.Generator().manual_seed(seed)

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=g, dtype=F64)

    second = {
        "pole_radius": uniform((batch, n_second), 0.0, 0.98),
        "freq_hz": uniform((batch, n_second), 20.0, SR / 2 - 20.0),
    }
    first = {"first_order_coeff": uniform((batch, n_first), -0.95, 0.95)}
    warp = {"warp": uniform((batch, n_second + n_first), -0.9, 0.9)}
    params = {
        "first_order": first,
        "second_order": second,
        "mixed": {**second, **first},
        "warped": {**second, **first, **warp},
        "warped_stretched": {**second, **first, **warp},
    }[kind]
    return params


CASES = [
    ("first_order", {}),
    ("second_order", {}),
    ("mixed", {}),
    ("warped", {}),
    ("warped_stretched", {}),  # stretch 4, as in the paper's code
    ("warped_stretched", {"stretch": 3}),
    ("warped_stretched", {"stretch": 2}),
]
CASE_IDS = [k + "".join(f"-{n}{v}" for n, v in e.items()) for k, e in CASES]


def test_kinds_listed():
    assert {k for k, _ in CASES} == set(KINDS)


# ------------------------------------------------------------------------ frequency domain


@pytest.mark.parametrize("kind, extra", CASES, ids=CASE_IDS)
def test_unit_magnitude(kind, extra):
    params = random_params(kind, 3, 3, 2, seed=1)
    sos = allpass_sos(SR, kind, **params, **extra)
    assert sos.dtype == F64
    for b in range(3):
        _, h = scipy.signal.sosfreqz(sos[b].numpy(), worN=4096, fs=SR)
        assert np.abs(np.abs(h) - 1).max() < 1e-10


def scipy_group_delay(sos: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Independent oracle: scipy's group delay of each section, summed."""
    total = np.zeros_like(freqs)
    for row in sos:
        _, gd = scipy.signal.group_delay((row[:3], row[3:]), w=freqs, fs=SR)
        total += gd
    return total


@pytest.mark.parametrize("kind, extra", CASES, ids=CASE_IDS)
def test_group_delay_matches_scipy(kind, extra):
    params = random_params(kind, 2, 3, 2, seed=2)
    sos = allpass_sos(SR, kind, **params, **extra)
    freqs = np.linspace(0, SR / 2, 777)
    ours = group_delay(sos, torch.from_numpy(freqs), SR)
    assert ours.shape == (2, 777)
    for b in range(2):
        ref = scipy_group_delay(sos[b].numpy(), freqs)
        np.testing.assert_allclose(ours[b].numpy(), ref, rtol=1e-9, atol=1e-9)
        # and against the expanded transfer function (less accurate in scipy itself)
        num, den = scipy.signal.sos2tf(sos[b].numpy())
        _, ref_tf = scipy.signal.group_delay((num, den), w=freqs, fs=SR)
        np.testing.assert_allclose(ours[b].numpy(), ref_tf, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind, extra", CASES, ids=CASE_IDS)
def test_phase_matches_unwrapped_scipy(kind, extra):
    params = random_params(kind, 2, 2, 2, seed=3)
    sos = allpass_sos(SR, kind, **params, **extra)
    freqs = np.linspace(0, SR / 2, 20001)  # dense, so numpy's unwrap is reliable
    ours = phase_response(sos, torch.from_numpy(freqs), SR)
    for b in range(2):
        _, h = scipy.signal.sosfreqz(sos[b].numpy(), worN=freqs, fs=SR)
        np.testing.assert_allclose(ours[b].numpy(), np.unwrap(np.angle(h)), atol=1e-9)


def test_phase_is_minus_group_delay_integral():
    sos = allpass_sos(SR, "warped", **random_params("warped", 1, 2, 1, seed=4))
    freqs = torch.linspace(0, SR / 2, 40001, dtype=F64)
    phase = phase_response(sos, freqs, SR)[0]
    tau = group_delay(sos, freqs, SR)[0]
    d_omega = 2 * math.pi * (freqs[1] - freqs[0]) / SR
    integral = torch.cumulative_trapezoid(tau, dx=d_omega)
    np.testing.assert_allclose(phase[1:].numpy(), -integral.numpy(), atol=1e-5)
    # total lag of an allpass of order N is N pi at Nyquist: 2 + 2 + 1 sections -> 5 pi
    assert abs(float(phase[-1]) + 5 * math.pi) < 1e-9


def test_phase_and_delay_of_known_sections():
    # pure delays: z^-1 (a = 0) and z^-2 (R = 0)
    freqs = torch.tensor([0.0, 1000.0, 12000.0, 20000.0], dtype=F64)
    w = 2 * math.pi * freqs / SR
    delay1 = first_order_allpass_sos(torch.zeros(1, 1, dtype=F64))
    delay2 = second_order_allpass_sos(torch.zeros(1, 1, dtype=F64), 1000.0, SR)
    assert torch.allclose(phase_response(delay1, freqs, SR)[0], -w)
    assert torch.allclose(phase_response(delay2, freqs, SR)[0], -2 * w)
    assert torch.allclose(group_delay(delay2, freqs, SR)[0], torch.full_like(w, 2.0))
    # a second-order section's phase crosses -pi at f_c as R -> 1 (the pole angle); the
    # lag at f_c then approaches pi with error O(1 - R)
    for radius in (0.99, 0.999, 0.9999):
        sec = second_order_allpass_sos(torch.tensor([[radius]], dtype=F64), 3000.0, SR)
        at_fc = phase_response(sec, torch.tensor([3000.0], dtype=F64), SR)
        assert abs(float(at_fc) + math.pi) < 3 * (1 - radius)


def test_phase_rejects_non_allpass():
    sos = torch.tensor([[1.0, 0.5, 0.25, 1.0, -0.2, 0.1]], dtype=F64)
    with pytest.raises(ValueError, match="sos"):
        phase_response(sos, torch.tensor([100.0], dtype=F64), SR)


# ----------------------------------------------------------- section definitions (oracles)


def biquad_response(b, a, z1):
    return (b[0] + b[1] * z1 + b[2] * z1**2) / (a[0] + a[1] * z1 + a[2] * z1**2)


def test_second_order_definition():
    radius, freq = 0.83, 5123.0
    sos = second_order_allpass_sos(radius, freq, SR, dtype=F64)[0, 0].numpy()
    c, d = radius**2, -2 * radius * math.cos(2 * math.pi * freq / SR)
    np.testing.assert_allclose(sos, [c, d, 1, 1, d, c], rtol=1e-15)
    poles = np.roots(sos[3:])
    np.testing.assert_allclose(np.abs(poles), radius, rtol=1e-12)
    np.testing.assert_allclose(np.abs(np.angle(poles)), 2 * math.pi * freq / SR, rtol=1e-12)


@pytest.mark.parametrize("warp", [-0.95, -0.5, 0.0, 0.3, 0.9, 0.99999])
def test_warped_biquad_equals_direct_substitution(warp):
    g = torch.Generator().manual_seed(5)
    radius = torch.rand(1, 6, generator=g, dtype=F64) * 0.999
    radius[0, -1] = 0.99999
    freq = torch.rand(1, 6, generator=g, dtype=F64) * SR / 2
    plain = second_order_allpass_sos(radius, freq, SR)[0].numpy()
    warped = second_order_allpass_sos(radius, freq, SR, warp=warp)[0].numpy()
    w = np.linspace(0, np.pi, 2048)
    z1 = np.exp(-1j * w)
    u = (warp + z1) / (1 + warp * z1)  # z^-1 -> first-order allpass
    for row_plain, row_warped in zip(plain, warped):
        direct = biquad_response(row_plain[:3], row_plain[3:], u)
        ours = biquad_response(row_warped[:3], row_warped[3:], z1)
        np.testing.assert_allclose(ours, direct, atol=1e-9)
        # and against the textbook expansion of the substitution (not the code's form)
        c, d, a = row_plain[0], row_plain[1], warp
        den = np.array(
            [1 + a * d + c * a * a, 2 * a * (1 + c) + d * (1 + a * a), c + a * d + a * a]
        )
        np.testing.assert_allclose(row_warped[3:], den / den[0], rtol=1e-6, atol=1e-9)
        assert np.abs(np.roots(row_warped[3:])).max() < 1


def test_warped_first_order_equals_direct_substitution():
    coeff = torch.tensor([[-0.9, -0.2, 0.0, 0.5, 0.99]], dtype=F64)
    for warp in (-0.7, 0.0, 0.6):
        plain = first_order_allpass_sos(coeff)[0].numpy()
        warped = first_order_allpass_sos(coeff, warp=warp)[0].numpy()
        z1 = np.exp(-1j * np.linspace(0, np.pi, 1000))
        u = (warp + z1) / (1 + warp * z1)
        for row_plain, row_warped in zip(plain, warped):
            assert row_warped[2] == 0 and row_warped[5] == 0
            direct = biquad_response(row_plain[:3], row_plain[3:], u)
            np.testing.assert_allclose(
                biquad_response(row_warped[:3], row_warped[3:], z1), direct, atol=1e-12
            )


@pytest.mark.parametrize("stretch", [1, 2, 3, 4, 5, 6, 7])
def test_stretched_equals_its_formula(stretch):
    coeff = torch.tensor([[-0.8, -0.3, 0.0, 0.2, 0.95]], dtype=F64)
    warp = 0.4
    sos = stretched_allpass_sos(coeff, warp=warp, stretch=stretch)
    rows_per_section = -(-stretch // 2)
    assert sos.shape == (1, 5 * rows_per_section, 6)
    x = np.random.default_rng(6).standard_normal(300)
    for i, a in enumerate(coeff[0].tolist()):
        k = (a + warp) / (1 + a * warp)
        num = np.zeros(stretch + 1)
        den = np.zeros(stretch + 1)
        num[0], num[-1], den[0], den[-1] = k, 1.0, 1.0, k
        rows = sos[0, i * rows_per_section : (i + 1) * rows_per_section].numpy()
        _, h_ref = scipy.signal.freqz(num, den, worN=1024)
        _, h = scipy.signal.sosfreqz(rows, worN=1024)
        np.testing.assert_allclose(h, h_ref, atol=1e-10)
        # the difference equation y[n] = k x[n] + x[n-M] - k y[n-M] of the paper's code
        y_ref = np.zeros_like(x)
        for n in range(len(x)):
            past_x = x[n - stretch] if n >= stretch else 0.0
            past_y = y_ref[n - stretch] if n >= stretch else 0.0
            y_ref[n] = k * x[n] + past_x - k * past_y
        np.testing.assert_allclose(scipy.signal.sosfilt(rows, x), y_ref, atol=1e-10)
        y = allpass_cascade(
            torch.from_numpy(x)[None, None],
            SR,
            "warped_stretched",
            first_order_coeff=a,
            warp=warp,
            stretch=stretch,
        )
        np.testing.assert_allclose(y[0, 0].numpy(), y_ref, atol=1e-12)


def test_stretched_phase_smooth_through_zero():
    # phase_response with stretch on the first-order rows equals the factored form and has
    # a finite gradient at k = 0, where the factored rows are not differentiable.
    freqs = torch.linspace(10, SR / 2 - 10, 64, dtype=F64)
    coeff = torch.tensor([[-0.4, 0.0, 0.7]], dtype=F64)
    proto = phase_response(first_order_allpass_sos(coeff), freqs, SR, stretch=4)
    factored = phase_response(stretched_allpass_sos(coeff, stretch=4), freqs, SR)
    torch.testing.assert_close(proto, factored)
    coeff.requires_grad_(True)

    def fn(c):
        rows = first_order_allpass_sos(c)
        return phase_response(rows, freqs, SR, stretch=4), group_delay(rows, freqs, SR, 4)

    assert gradcheck(fn, (coeff,))
    assert gradgradcheck(fn, (coeff,))


# ------------------------------------------------------------------------------ time domain


@pytest.mark.parametrize("kind, extra", CASES, ids=CASE_IDS)
def test_cascade_matches_scipy_sosfilt_float64(kind, extra):
    params = random_params(kind, 3, 3, 2, seed=7)
    x = torch.randn(3, 2, 3000, dtype=F64, generator=torch.Generator().manual_seed(0))
    y = allpass_cascade(x, SR, kind, **params, **extra)
    sos = allpass_sos(SR, kind, **params, **extra)
    for b, c in itertools.product(range(3), range(2)):
        ref = scipy.signal.sosfilt(sos[b].numpy(), x[b, c].numpy())
        assert np.abs(y[b, c].numpy() - ref).max() < 1e-9


@pytest.mark.parametrize("kind, extra", CASES, ids=CASE_IDS)
def test_cascade_float32_relative_error(kind, extra):
    params = random_params(kind, 2, 3, 2, seed=8)
    x = torch.randn(2, 1, 20000, generator=torch.Generator().manual_seed(1))
    y = allpass_cascade(x, SR, kind, **{k: v.float() for k, v in params.items()}, **extra)
    assert y.dtype == torch.float32
    sos = allpass_sos(SR, kind, **params, **extra)
    for b in range(2):
        ref = scipy.signal.sosfilt(sos[b].numpy(), x[b, 0].double().numpy())
        assert np.abs(y[b, 0].double().numpy() - ref).max() / np.abs(ref).max() < 1e-4


@pytest.mark.parametrize("kind, extra", CASES, ids=CASE_IDS)
def test_energy_preserved(kind, extra):
    # A burst followed by a long silence: an allpass keeps the energy once the tail decays.
    params = random_params(kind, 2, 3, 2, seed=9)
    if "pole_radius" in params:
        params["pole_radius"] = params["pole_radius"] * 0.9  # tails below 1e-12 in 40k samples
    burst = torch.randn(2, 2, 2000, dtype=F64, generator=torch.Generator().manual_seed(2))
    x = torch.nn.functional.pad(burst, (0, 40000))
    y = allpass_cascade(x, SR, kind, **params, **extra)
    e_in, e_out = (x**2).sum(-1), (y**2).sum(-1)
    torch.testing.assert_close(e_out, e_in, rtol=1e-9, atol=0)


@pytest.mark.parametrize("backend", ["torch", "scan", "numba"])
@pytest.mark.parametrize("kind, extra", CASES, ids=CASE_IDS)
def test_backends_agree(kind, extra, backend):
    params = random_params(kind, 2, 2, 2, seed=10)
    x = torch.randn(2, 2, 200, dtype=F64, generator=torch.Generator().manual_seed(3))
    ref = allpass_cascade(x, SR, kind, **params, **extra, backend="numba")
    torch.testing.assert_close(
        allpass_cascade(x, SR, kind, **params, **extra, backend=backend), ref
    )


@pytest.mark.parametrize("kind, extra", CASES, ids=CASE_IDS)
def test_batch_consistency(kind, extra):
    params = random_params(kind, 3, 2, 2, seed=11)
    x = torch.randn(3, 2, 300, dtype=F64, generator=torch.Generator().manual_seed(4))
    y = allpass_cascade(x, SR, kind, **params, **extra)
    sos = allpass_sos(SR, kind, **params, **extra)
    for b in range(3):
        item = {k: v[b : b + 1] for k, v in params.items()}
        torch.testing.assert_close(
            allpass_cascade(x[b : b + 1], SR, kind, **item, **extra), y[b : b + 1]
        )
        torch.testing.assert_close(allpass_sos(SR, kind, **item, **extra), sos[b : b + 1])


def test_parameter_broadcasting():
    x = torch.randn(3, 1, 100, dtype=F64)
    # scalars, shared (n,) and (batch,) warp broadcast as documented
    y = allpass_cascade(
        x,
        SR,
        "warped",
        pole_radius=0.7,
        freq_hz=torch.tensor([500.0, 9000.0]),
        first_order_coeff=0.2,
        warp=torch.tensor([0.1, 0.2, 0.3], dtype=F64),
    )
    for b, aw in enumerate((0.1, 0.2, 0.3)):
        full = allpass_cascade(
            x[b : b + 1],
            SR,
            "warped",
            pole_radius=torch.tensor([[0.7, 0.7]], dtype=F64),
            freq_hz=torch.tensor([[500.0, 9000.0]], dtype=F64),
            first_order_coeff=torch.tensor([[0.2]], dtype=F64),
            warp=torch.full((1, 3), aw, dtype=F64),
        )
        torch.testing.assert_close(y[b : b + 1], full)


def test_cascade_equals_section_by_section():
    params = random_params("mixed", 1, 2, 2, seed=12)
    x = torch.randn(1, 1, 500, dtype=F64)
    y = x
    for i in range(2):
        y = allpass_cascade(
            y,
            SR,
            "second_order",
            pole_radius=params["pole_radius"][:, i],
            freq_hz=params["freq_hz"][:, i],
        )
        y = allpass_cascade(
            y, SR, "first_order", first_order_coeff=params["first_order_coeff"][:, i]
        )
    torch.testing.assert_close(allpass_cascade(x, SR, "mixed", **params), y)


# -------------------------------------------------------------------------------- gradients

GRAD_CASES = [
    ("first_order", {}),
    ("second_order", {}),
    ("mixed", {}),
    ("warped", {}),
    ("warped_stretched", {}),
    ("warped_stretched", {"stretch": 3}),
]


def _grad_inputs(kind, extra):
    n_second, n_first = {"first_order": (0, 2), "second_order": (2, 0)}.get(kind, (1, 1))
    params = random_params(kind, 2, n_second, n_first, seed=13)
    stretch = extra.get("stretch")
    params = {k: v for k, v in params.items() if v.numel()}
    x = torch.randn(2, 1, 40, dtype=F64, generator=torch.Generator().manual_seed(5))
    return x, params, stretch


@pytest.mark.parametrize("kind, extra", GRAD_CASES, ids=[k + str(e) for k, e in GRAD_CASES])
def test_gradcheck_every_combination(kind, extra):
    x, params, stretch = _grad_inputs(kind, extra)
    names = ["x", *params]
    values = [x, *params.values()]
    kw = {"stretch": stretch} if stretch is not None else {}
    for mask in itertools.product([False, True], repeat=len(names)):
        if not any(mask):
            continue
        inputs = [v.clone().requires_grad_(m) for v, m in zip(values, mask)]

        def fn(*args):
            return allpass_cascade(args[0], SR, kind, **dict(zip(names[1:], args[1:])), **kw)

        # Every combination in torch's fast mode (a random projection of the Jacobian), and
        # the full Jacobians once with every input requiring grad.
        fast = not all(mask)
        assert gradcheck(fn, inputs, fast_mode=fast), mask
        assert gradgradcheck(fn, inputs, fast_mode=fast), mask


@pytest.mark.parametrize("kind, extra", CASES, ids=CASE_IDS)
def test_response_gradcheck(kind, extra):
    params = random_params(kind, 1, 1, 1, seed=14)
    params = {k: v.requires_grad_(True) for k, v in params.items() if v.numel()}
    freqs = torch.linspace(20, SR / 2 - 20, 16, dtype=F64)
    kw = extra

    def fn(*args):
        sos = allpass_sos(SR, kind, **dict(zip(params, args)), **kw)
        return phase_response(sos, freqs, SR), group_delay(sos, freqs, SR)

    assert gradcheck(fn, tuple(params.values()))
    assert gradgradcheck(fn, tuple(params.values()))


# ------------------------------------------------------------------- silence and extremes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind, extra", CASES, ids=CASE_IDS)
def test_silence_finite_output_and_grad(kind, extra, dtype):
    params = random_params(kind, 2, 2, 2, seed=15)
    params = {k: v.to(dtype).requires_grad_(True) for k, v in params.items()}
    x = torch.zeros(2, 1, 256, dtype=dtype, requires_grad=True)
    y = allpass_cascade(x, SR, kind, **params, **extra)
    assert torch.equal(y, torch.zeros_like(y))
    y.sum().backward()
    for t in (x, *params.values()):
        assert torch.isfinite(t.grad).all()


EXTREMES = {
    "pole_radius": [0.0, 0.99999],
    "freq_hz": [0.0, 20.0, SR / 2],
    "first_order_coeff": [-0.99999, 0.0, 0.99999],
    "warp": [-0.99999, 0.0, 0.99999],
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["mixed", "warped", "warped_stretched"])
def test_extreme_parameters_finite(kind, dtype):
    names = ["pole_radius", "freq_hz", "first_order_coeff"] + (["warp"] if "warped" in kind else [])
    combos = list(itertools.product(*(EXTREMES[n] for n in names)))
    # every combination of extremes at once, one per batch item
    params = {
        n: torch.tensor([[c[i]] for c in combos], dtype=dtype, requires_grad=True)
        for i, n in enumerate(names)
    }
    if "warp" in params:  # one warp per section (second order, first order)
        params["warp"] = params["warp"].detach().expand(-1, 2).clone().requires_grad_(True)
    g = torch.Generator().manual_seed(6)
    x = torch.rand(len(combos), 1, 4096, generator=g, dtype=dtype) * 2 - 1  # full scale
    x.requires_grad_(True)
    y = allpass_cascade(x, SR, kind, **params)
    assert torch.isfinite(y).all()
    (y**2).mean().backward()
    for t in (x, *params.values()):
        assert torch.isfinite(t.grad).all()
    # Still exactly allpass (numerator = reversed denominator, row by row) and stable. (A
    # frequency-response check is ill-conditioned here: with poles 1e-10 from the unit circle
    # sosfreqz's own rounding of N and D dominates.)
    sos = allpass_sos(SR, kind, **{k: v.detach() for k, v in params.items()}).double()
    first = (sos[..., 2] == 0) & (sos[..., 5] == 0)
    reversed_second = sos[..., [5, 4, 3]]
    reversed_first = torch.stack([sos[..., 4], sos[..., 3], sos[..., 5]], -1)
    expected = torch.where(first[..., None], reversed_first, reversed_second)
    assert torch.equal(sos[..., :3], expected)
    for row in sos.reshape(-1, 6).numpy():
        assert np.abs(np.roots(row[3:])).max(initial=0) <= 1.0


# ------------------------------------------------------------------------------ bad input


def _good(kind="warped"):
    return random_params(kind, 2, 2, 1, seed=16)


@pytest.mark.parametrize(
    "name, value",
    [
        ("pole_radius", 1.0),
        ("pole_radius", 1.5),
        ("pole_radius", -0.1),
        ("pole_radius", float("nan")),
        ("freq_hz", -1.0),
        ("freq_hz", SR / 2 + 1),
        ("freq_hz", float("inf")),
        ("first_order_coeff", 1.0),
        ("first_order_coeff", -1.0),
        ("first_order_coeff", float("nan")),
        ("warp", 1.0),
        ("warp", -1.2),
        ("warp", float("nan")),
    ],
)
def test_bad_parameter_names_argument(name, value):
    params = _good()
    params[name] = params[name].clone()
    params[name][0, 0] = value
    x = torch.randn(2, 1, 64, dtype=F64)
    with pytest.raises(ValueError, match=name):
        allpass_cascade(x, SR, "warped", **params)
    with pytest.raises(ValueError, match=name):
        allpass_sos(SR, "warped", **params)


def test_bad_section_functions_name_argument():
    with pytest.raises(ValueError, match="coeff"):
        first_order_allpass_sos(1.0)
    with pytest.raises(ValueError, match="pole_radius"):
        second_order_allpass_sos(1.0, 100.0, SR)
    with pytest.raises(ValueError, match="warp"):
        stretched_allpass_sos(0.5, warp=-1.0)
    with pytest.raises(ValueError, match="stretch"):
        stretched_allpass_sos(0.5, warp=0.1, stretch=0)


def test_bad_audio_and_shapes():
    params = _good()
    with pytest.raises(ValueError, match="x"):
        allpass_cascade(torch.full((2, 1, 64), float("nan")), SR, "warped", **params)
    with pytest.raises(ValueError, match="x"):
        allpass_cascade(torch.randn(64), SR, "warped", **params)
    with pytest.raises(ValueError, match="batch"):
        allpass_cascade(torch.randn(3, 1, 64, dtype=F64), SR, "warped", **params)
    with pytest.raises(ValueError, match="sections"):
        bad = dict(params, freq_hz=params["freq_hz"][:, :1].expand(2, 3))
        allpass_cascade(torch.randn(2, 1, 64, dtype=F64), SR, "warped", **bad)
    with pytest.raises(ValueError, match="warp"):
        bad = dict(params, warp=torch.zeros(2, 2, dtype=F64))  # needs 1 or 3 sections
        allpass_cascade(torch.randn(2, 1, 64, dtype=F64), SR, "warped", **bad)
    with pytest.raises(ValueError, match="sample_rate"):
        allpass_cascade(torch.randn(2, 1, 64, dtype=F64), 0.0, "warped", **params)


def test_kind_arguments_checked():
    x = torch.randn(1, 1, 64, dtype=F64)
    with pytest.raises(ValueError, match="kind"):
        allpass_cascade(x, SR, "lattice", first_order_coeff=0.5)
    with pytest.raises(ValueError, match="warp"):
        allpass_cascade(x, SR, "second_order", pole_radius=0.5, freq_hz=100.0, warp=0.1)
    with pytest.raises(ValueError, match="first_order_coeff"):
        allpass_cascade(
            x, SR, "second_order", pole_radius=0.5, freq_hz=100.0, first_order_coeff=0.1
        )
    with pytest.raises(ValueError, match="freq_hz"):
        allpass_cascade(x, SR, "second_order", pole_radius=0.5)
    with pytest.raises(ValueError, match="warp"):
        allpass_cascade(x, SR, "warped", first_order_coeff=0.5)
    with pytest.raises(ValueError, match="first_order_coeff"):
        allpass_cascade(x, SR, "warped_stretched", warp=0.1, pole_radius=0.5, freq_hz=100.0)
    with pytest.raises(ValueError, match="stretch"):
        allpass_cascade(
            x, SR, "mixed", pole_radius=0.5, freq_hz=100.0, first_order_coeff=0.1, stretch=4
        )
    with pytest.raises(ValueError, match="stretch"):
        allpass_cascade(x, SR, "warped_stretched", first_order_coeff=0.1, warp=0.0, stretch=2.5)


def test_short_signal_shorter_than_stretch():
    x = torch.randn(1, 1, 3, dtype=F64)
    y = allpass_cascade(x, SR, "warped_stretched", first_order_coeff=0.5, warp=0.0, stretch=4)
    torch.testing.assert_close(y, 0.5 * x)  # only the direct path k x[n] reaches n < M


def test_stretched_cascade_gradient_at_zero_coefficient():
    # k = 0 is where the factored rows lose differentiability; the polyphase filter does not.
    x = torch.randn(1, 1, 48, dtype=F64, generator=torch.Generator().manual_seed(7))
    coeff = torch.zeros(1, 1, dtype=F64, requires_grad=True)
    warp = torch.zeros(1, 1, dtype=F64, requires_grad=True)

    def fn(c, w):
        return allpass_cascade(x, SR, "warped_stretched", first_order_coeff=c, warp=w, stretch=3)

    assert gradcheck(fn, (coeff, warp))
    assert gradgradcheck(fn, (coeff, warp))
    # d y / d k at k = 0 is x[n] - x[n - 2M] (y = k x + z^-M x - k z^-2M x + O(k^2))
    (grad,) = torch.autograd.grad(fn(coeff, warp).sum(), coeff)
    expected = x.sum() - x[..., : 48 - 6].sum()
    torch.testing.assert_close(grad.sum(), expected)


def test_float32_audio_near_the_unit_circle_matches_float64_scipy():
    """Poles at R = 0.999 and 30 Hz over 2 s: float32 audio, float64-designed oracle.

    Designing the sections in float32 gives ~5e-6 here; the float64 design gives ~1e-7.
    """
    radius = torch.tensor([[0.999, 0.99, 0.9]])
    freq = torch.tensor([[30.0, 500.0, 5000.0]])
    x = torch.randn(1, 1, 88200, generator=torch.Generator().manual_seed(0))
    y = allpass_cascade(x, 44100.0, "second_order", pole_radius=radius, freq_hz=freq)
    sos = allpass_sos(44100.0, "second_order", pole_radius=radius.double(), freq_hz=freq.double())
    sos = sos[0].numpy()
    ref = scipy.signal.sosfilt(sos / sos[:, 3:4], x[0, 0].double().numpy())
    assert np.abs(y[0, 0].double().numpy() - ref).max() / np.abs(ref).max() < 1e-6


def test_nyquist_given_in_float32_is_accepted_and_matches_float64():
    # sample_rate / 2 rounds up in float32 at this rate (issue 20's fuzz): still [0, fs/2].
    sr = 65536.98046875
    x = torch.randn(1, 1, 256, dtype=torch.float64)
    f32 = torch.tensor([[sr / 2]], dtype=torch.float32)
    assert float(f32) > sr / 2
    y = allpass_cascade(x, sr, "second_order", pole_radius=0.5, freq_hz=f32)
    expected = allpass_cascade(x, sr, "second_order", pole_radius=0.5, freq_hz=sr / 2)
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="freq_hz"):  # a real excess is still refused
        allpass_cascade(x, sr, "second_order", pole_radius=0.5, freq_hz=sr / 2 * (1 + 1e-4))
