"""Every functional op, effect and task on every device this machine has, and on ``meta``.

The ``device`` fixture (tests/conftest.py) lists ``"cpu"`` and, where torch sees one,
``"cuda"``, so on a GPU machine the same tests run there too. For each public name of
:mod:`diffx.functional`, :mod:`diffx.effects` and :mod:`diffx.tasks` there is a case below or
an entry saying why not; a new public op without either fails
``test_every_public_*_has_a_case``.

- Functional ops and effects: one forward and backward on small inputs; the output is on the
  input's device with the expected dtype, every gradient is finite and on that device.
- The same cases on the ``meta`` device (shapes and dtypes only, no values): the output's shape
  and dtype equal the CPU run's. Ops that cannot run there (they call numba or NumPy, or branch
  on values) are listed in ``*_META_UNSUPPORTED`` with the reason, and the test checks that
  they still fail, so one that starts working is moved to the tested set.
- Tasks: one short ``Trainer.fit`` (one or two optimizer steps) on the device; the loss is
  finite, every gradient the optimizers see is finite and on the device.
- :func:`diffx._validation.wide_dtype`, the one route of device-side float64 work, refuses a
  device without float64 (Apple MPS) naming the work; with the CPU made to pose as such a
  device, every op that needs float64 refuses through it and float32-only ops still run.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

import diffx._validation as validation
import diffx.effects as effects
import diffx.functional as F
import diffx.tasks as tasks
from tests.conftest import requires_pedalboard

SR = 16000
B = 2  # batch
T = 512  # samples


# --------------------------------------------------------------------------------------------
# Building inputs: made on the CPU from a fixed seed, then moved (meta keeps shapes only).


def _leaf(t: torch.Tensor, device) -> torch.Tensor:
    return t.detach().to(device).requires_grad_(t.is_floating_point())


def _tensor(values, device, grad: bool = True) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.float32)
    return _leaf(t, device) if grad else t.to(device)


def _audio(device, channels: int = 1, samples: int = T, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return _leaf(0.3 * torch.randn(B, channels, samples, generator=gen), device)


def _allpass_params(device):
    return dict(pole_radius=_tensor([0.8, 0.6], device), freq_hz=_tensor([500.0, 2000.0], device))


def _sos(device):
    """A stable peaking biquad and a low shelf per item, ``(B, 2, 6)``, requiring grad."""
    sos = torch.stack([
        F.biquad("peaking", torch.tensor([1000.0, 3000.0]), 0.7, SR, torch.tensor([6.0, -3.0])),
        F.biquad("low_shelf", torch.tensor([100.0, 200.0]), 0.7, SR, torch.tensor([3.0, -6.0])),
    ], dim=1)  # fmt: skip
    return _leaf(sos, device)


def _eq_params(device):
    return dict(
        low_shelf_freq_hz=_tensor([100.0, 150.0], device),
        low_shelf_gain_db=_tensor([3.0, -3.0], device),
        band_freqs_hz=_tensor([[500.0, 2000.0], [800.0, 4000.0]], device),
        band_gains_db=_tensor([[6.0, -6.0], [2.0, 4.0]], device),
        band_qs=_tensor([[0.7, 2.0], [1.0, 4.0]], device),
        high_shelf_freq_hz=_tensor([5000.0, 6000.0], device),
        high_shelf_gain_db=_tensor([-3.0, 3.0], device),
    )


@dataclass
class Case:
    """``run()`` gives the op's output (a tensor or a tuple of them); ``leaves`` are the inputs
    that require grad; ``differentiable=False`` for ops documented to pass no gradient."""

    run: Callable[[], object]
    leaves: list[torch.Tensor] = field(default_factory=list)
    differentiable: bool = True


def _case(run, *leaves, differentiable=True) -> Case:
    return Case(run, [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad],
                differentiable)  # fmt: skip


def _functional_cases(device) -> dict[str, Callable[[], Case]]:
    """One small call of every differentiable-or-device op, built lazily for ``device``."""
    d = device

    def x():
        return _audio(d)

    def allpass_sos_case(name, *args, **kwargs):
        def build():
            # Lists become parameter tensors requiring grad; numbers pass as they are.
            leaves = {k: _tensor(v, d) for k, v in kwargs.items() if isinstance(v, list)}
            rest = {k: v for k, v in kwargs.items() if not isinstance(v, list)}
            return _case(lambda: getattr(F, name)(*args, **leaves, **rest), *leaves.values())

        return build

    def response_case(name):
        def build():
            p = _allpass_params(d)
            freqs = torch.tensor([100.0, 1000.0, 5000.0]).to(d)
            return _case(
                lambda: getattr(F, name)(F.allpass_sos(SR, **p), freqs, SR), *p.values()
            )

        return build

    def clip_case(name, level_name, antialiasing):
        def build():
            xs, level = x(), _tensor([-3.0, 3.0], d)
            kwargs = {level_name: level, "antialiasing": antialiasing}
            return _case(lambda: getattr(F, name)(xs, **kwargs), xs, level)

        return build

    def build_adaa1():
        u = x()
        return _case(lambda: F.adaa1(u, torch.tanh, lambda v: torch.log(torch.cosh(v))), u)

    def build_allpass_cascade():
        xs, p = x(), _allpass_params(d)
        return _case(lambda: F.allpass_cascade(xs, SR, "second_order", **p), xs, *p.values())

    def build_band_masks():
        return _case(lambda: F.band_masks(129, SR, [500.0, 2000.0], device=d),
                     differentiable=False)  # fmt: skip

    def build_biquad():
        f, q, g = _tensor([1000.0, 3000.0], d), _tensor([0.7, 2.0], d), _tensor([3.0, -6.0], d)
        return _case(lambda: F.biquad("peaking", f, q, SR, g), f, q, g)

    def build_compressor():
        xs = x()
        values = dict(threshold_db=[-20.0, -10.0], ratio=[4.0, 2.0], attack_ms=[1.0, 5.0],
                      release_ms=[20.0, 50.0], knee_db=[6.0, 0.0])  # fmt: skip
        p = {k: _tensor(v, d) for k, v in values.items()}
        return _case(lambda: F.compressor(xs, SR, **p), xs, *p.values())

    def build_expander():
        xs = _audio(d, channels=2)
        values = dict(threshold_db=[-20.0, -30.0], ratio=[2.0, 4.0], attack_ms=[1.0, 5.0],
                      release_ms=[20.0, 50.0], knee_db=[6.0, 0.0])  # fmt: skip
        p = {k: _tensor(v, d) for k, v in values.items()}
        return _case(lambda: F.expander(xs, SR, **p, link="none"), xs, *p.values())

    def build_expander_gain_db():
        level = _leaf(torch.linspace(-60.0, 0.0, T).expand(B, T), d)
        t, r, k = _tensor([-20.0, -30.0], d), _tensor([2.0, 4.0], d), _tensor([6.0, 0.0], d)
        return _case(lambda: F.expander_gain_db(level, t, r, k), level, t, r, k)

    def build_noise_gate():
        xs = _audio(d, channels=2)
        values = dict(threshold_db=[-20.0, -30.0], attack_ms=[1.0, 0.5], release_ms=[20.0, 50.0],
                      range_db=[-60.0, -40.0])  # fmt: skip
        p = {k: _tensor(v, d) for k, v in values.items()}
        return _case(lambda: F.noise_gate(xs, SR, hold_ms=2.0, **p, link="max"), xs, *p.values())

    def build_limiter():
        xs = _audio(d, channels=2)
        t, r = _tensor([-12.0, -6.0], d), _tensor([20.0, 50.0], d)
        return _case(lambda: F.limiter(xs, SR, t, r, lookahead_ms=1.0), xs, t, r)

    def build_compressor_gain_db():
        level = _leaf(torch.linspace(-60.0, 0.0, T).expand(B, T), d)
        t, r, k = _tensor([-20.0, -10.0], d), _tensor([4.0, 2.0], d), _tensor([6.0, 0.0], d)
        return _case(lambda: F.compressor_gain_db(level, t, r, k), level, t, r, k)

    def build_convolution_reverb():
        xs, mix = x(), _tensor([0.3, 0.7], d)
        ir = _leaf(torch.randn(1, 1, 64, generator=torch.Generator().manual_seed(1)) * 0.1, d)
        return _case(lambda: F.convolution_reverb(xs, ir, mix), xs, ir, mix)

    def build_db_to_amplitude():
        g = _tensor([-6.0, 3.0], d)
        return _case(lambda: F.db_to_amplitude(g), g)

    def build_diode_clipper():
        xs = x().detach()
        return _case(lambda: F.diode_clipper(xs, SR, oversampling=2), differentiable=False)

    def build_feedback_delay():
        p = dict(delay_ms=_tensor([5.3, 2.0], d), feedback=_tensor([0.6, -0.4], d),
                 mix=_tensor([0.5, 1.0], d), lowpass_hz=_tensor([3000.0, 5000.0], d),
                 highpass_hz=_tensor([100.0, 50.0], d))  # fmt: skip
        audio = _audio(d, channels=2, seed=10)
        return _case(lambda: F.feedback_delay(audio, SR, **p), audio, *p.values())

    def build_fdn_reverb():
        rt60, mix = _tensor([[0.5, 0.3, 0.2], [1.0, 0.8, 0.4]], d), _tensor([0.3, 0.6], d)
        audio = _audio(d, seed=11)
        return _case(lambda: F.fdn_reverb(audio, SR, rt60, mix, delays=[31, 37, 41, 43],
                                          output_channels=2), audio, rt60, mix)  # fmt: skip

    def build_fft_convolve():
        xs, h = x(), _leaf(torch.randn(B, 1, 33, generator=torch.Generator().manual_seed(2)), d)
        return _case(lambda: F.fft_convolve(xs, h), xs, h)

    def build_filtered_noise():
        mags = _leaf(torch.rand(B, 8, 9, generator=torch.Generator().manual_seed(3)), d)
        noise = (2 * torch.rand(B, 1, 8 * 64, generator=torch.Generator().manual_seed(4)) - 1)
        noise = noise.to(d)
        return _case(lambda: F.filtered_noise(mags, 8 * 64, noise=noise), mags)

    def build_fractional_delay():
        xs, delay = x(), _tensor([0.13, 0.71], d)
        return _case(lambda: F.fractional_delay(xs, delay, SR), xs, delay)

    def build_fft_up():
        xs = x()
        return _case(lambda: F.fft_upsample(xs, 2), xs)

    def build_fft_down():
        xs = x()
        return _case(lambda: F.fft_downsample(xs, 2), xs)

    def build_gain():
        xs, g = x(), _tensor([3.0, -3.0], d)
        return _case(lambda: F.gain(xs, g), xs, g)

    def build_pan():
        mono, p = _audio(d, channels=1, seed=7), _tensor([-0.5, 0.5], d)
        return _case(lambda: F.pan(mono, p), mono, p)

    def build_stereo_width():
        stereo, w = _audio(d, channels=2, seed=8), _tensor([0.5, 2.0], d)
        return _case(lambda: F.stereo_width(stereo, w), stereo, w)

    def mid_side_case(name):
        def build():
            stereo = _audio(d, channels=2, seed=9)
            return _case(lambda: getattr(F, name)(stereo), stereo)

        return build

    def build_harmonic_synth():
        frames = 9
        f0 = _leaf(torch.linspace(200.0, 300.0, frames).expand(B, frames), d)
        amp = _leaf(torch.full((B, frames), 0.5), d)
        dist = _leaf(torch.rand(B, frames, 6, generator=torch.Generator().manual_seed(5)), d)
        return _case(lambda: F.harmonic_synth(f0, amp, dist, SR, n_samples=T), f0, amp, dist)

    def build_moving_average():
        xs = x()
        return _case(lambda: F.moving_average(xs, 5), xs)

    def build_noise_reverb():
        xs, rt60, mix = x(), _tensor([0.2, 0.4], d), _tensor([0.3, 0.6], d)
        return _case(lambda: F.noise_reverb(xs, SR, rt60, mix=mix, length_s=0.05), xs, rt60, mix)

    def build_noise_reverb_ir():
        rt60, gains = _tensor([0.2, 0.4], d), _tensor([[0.0, -6.0], [3.0, 0.0]], d)
        return _case(lambda: F.noise_reverb_ir(rt60, gains, SR, 800), rt60, gains)

    def build_normalize_sos():
        sos = _sos(d)
        return _case(lambda: F.normalize_sos(sos), sos)

    def build_parametric_eq():
        xs, p = x(), _eq_params(d)
        return _case(lambda: F.parametric_eq(xs, SR, **p), xs, *p.values())

    def build_parametric_eq_sos():
        p = _eq_params(d)
        return _case(lambda: F.parametric_eq_sos(SR, **p), *p.values())

    def build_sos_frequency_response():
        sos, freqs = _sos(d), torch.tensor([100.0, 1000.0, 5000.0]).to(d)
        return _case(lambda: F.sos_frequency_response(sos, freqs, SR), sos)

    def build_sosfilt():
        xs, sos = x(), _sos(d)
        return _case(lambda: F.sosfilt(xs, sos), xs, sos)

    def build_upsample_frames():
        frames = _leaf(torch.rand(B, 9, 3, generator=torch.Generator().manual_seed(6)), d)
        return _case(lambda: F.upsample_frames(frames, T), frames)

    def build_utterance_statistics():
        feats = _leaf(torch.randn(B, 50, 4, generator=torch.Generator().manual_seed(7)), d)
        return _case(lambda: F.utterance_statistics(feats), feats)

    def build_variance_scaling():
        feats = _leaf(torch.randn(B, 50, 4, generator=torch.Generator().manual_seed(8)), d)
        gv = _tensor([1.0, 2.0, 0.5, 1.5], d)
        return _case(lambda: F.variance_scaling(feats, gv, strength=0.5), feats, gv)

    def build_sosfilt_varying():
        xs = x()
        f = _leaf(torch.linspace(300.0, 3000.0, T).expand(B, T), d)
        return _case(lambda: F.sosfilt_varying(xs, F.biquad_trajectory("low_pass", f, 0.7, SR)
                                               .unsqueeze(1)), xs, f)  # fmt: skip

    def build_biquad_trajectory():
        f, g = _leaf(torch.linspace(300.0, 3000.0, 9).expand(B, 9), d), _tensor([3.0, -6.0], d)
        return _case(lambda: F.biquad_trajectory("peaking", f, 0.7, SR, g), f, g)

    def build_state_variable_filter():
        xs, q = x(), _tensor([0.7, 4.0], d)
        f = _leaf(torch.linspace(300.0, 3000.0, 8).expand(B, 8), d)  # blocks
        return _case(lambda: F.state_variable_filter(xs, f, q, SR, "bandpass"), xs, f, q)

    def build_modulated_filter():
        xs, f, rate = x(), _tensor([500.0, 2000.0], d), _tensor([3.0, 5.0], d)
        return _case(lambda: F.modulated_filter(xs, SR, f, rate_hz=rate), xs, f, rate)

    def build_auto_wah():
        xs, sens, mix = x(), _tensor([6.0, 12.0], d), _tensor([0.5, 1.0], d)
        return _case(lambda: F.auto_wah(xs, SR, sensitivity_db=sens, mix=mix), xs, sens, mix)

    return {
        "adaa1": build_adaa1,
        "auto_wah": build_auto_wah,
        "biquad_trajectory": build_biquad_trajectory,
        "modulated_filter": build_modulated_filter,
        "sosfilt_varying": build_sosfilt_varying,
        "state_variable_filter": build_state_variable_filter,
        "allpass_cascade": build_allpass_cascade,
        "allpass_sos": allpass_sos_case("allpass_sos", SR, pole_radius=[0.8, 0.6],
                                        freq_hz=[500.0, 2000.0]),  # fmt: skip
        "band_masks": build_band_masks,
        "biquad": build_biquad,
        "compressor": build_compressor,
        "expander": build_expander,
        "expander_gain_db": build_expander_gain_db,
        "limiter": build_limiter,
        "noise_gate": build_noise_gate,
        "compressor_gain_db": build_compressor_gain_db,
        "convolution_reverb": build_convolution_reverb,
        "db_to_amplitude": build_db_to_amplitude,
        "diode_clipper": build_diode_clipper,
        "fdn_reverb": build_fdn_reverb,
        "feedback_delay": build_feedback_delay,
        "fft_convolve": build_fft_convolve,
        "fft_downsample": build_fft_down,
        "fft_upsample": build_fft_up,
        "filtered_noise": build_filtered_noise,
        "first_order_allpass_sos": allpass_sos_case("first_order_allpass_sos",
                                                    coeff=[0.3, -0.2]),  # fmt: skip
        "fractional_delay": build_fractional_delay,
        "gain": build_gain,
        "group_delay": response_case("group_delay"),
        "hard_clip": clip_case("hard_clip", "threshold_db", None),
        "harmonic_synth": build_harmonic_synth,
        "mid_side_decode": mid_side_case("mid_side_decode"),
        "mid_side_encode": mid_side_case("mid_side_encode"),
        "moving_average": build_moving_average,
        "noise_reverb": build_noise_reverb,
        "noise_reverb_ir": build_noise_reverb_ir,
        "normalize_sos": build_normalize_sos,
        "parametric_eq": build_parametric_eq,
        "pan": build_pan,
        "parametric_eq_sos": build_parametric_eq_sos,
        "phase_response": response_case("phase_response"),
        "second_order_allpass_sos": allpass_sos_case(
            "second_order_allpass_sos", sample_rate=SR, pole_radius=[0.8], freq_hz=[1000.0]
        ),
        "soft_clip": clip_case("soft_clip", "drive_db", "adaa1"),
        "sos_frequency_response": build_sos_frequency_response,
        "sosfilt": build_sosfilt,
        "stereo_width": build_stereo_width,
        "stretched_allpass_sos": allpass_sos_case("stretched_allpass_sos", coeff=[0.3, -0.2],
                                                  stretch=2),  # fmt: skip
        "tanh_distortion": clip_case("tanh_distortion", "drive_db", "adaa1"),
        "upsample_frames": build_upsample_frames,
        "utterance_statistics": build_utterance_statistics,
        "variance_scaling": build_variance_scaling,
    }


FUNCTIONAL_WITHOUT_DEVICE = {
    "adaa_tolerance": "a number from a dtype; no tensors",
    "crossover_frequencies": "Python floats from Python numbers; no tensors",
    "fdn_delays": "Python ints (delay-line lengths) from Python numbers; no tensors",
    "global_variance": "NumPy arrays in and out (feature statistics, computed on the CPU)",
    "resample": "NumPy arrays in and out (scipy's polyphase resampler, float64 on the CPU)",
}
"""Public callables of diffx.functional that take no tensors, so have no device to test."""

# Ops that check their parameters' values before computing (ranges, stability, signs), as the
# design asks of every op a user can call wrongly: a meta tensor has no values, so the check's
# `bool(tensor)` raises "Tensor.item() cannot be called on meta tensors". Where it happens:
_RANGE_CHECKS = "checks parameter values first (allpass.py _check_range: radius < 1, |a| < 1)"
_DESIGN_CHECKS = "checks parameter values first (filters.py _design_params: 0 < f < fs/2)"
_STABILITY = "checks the sections' values first (filters.py normalize_sos: a0 != 0, poles)"
FUNCTIONAL_META_UNSUPPORTED = {
    "limiter": "counts its look-ahead in samples from the value of lookahead_ms (gates.py)",
    "auto_wah": "checks its parameters' ranges first (varying.py _trajectory)",
    "biquad_trajectory": "checks its trajectories' ranges first (varying.py _trajectory)",
    "modulated_filter": "checks its parameters' ranges first (varying.py _trajectory)",
    "sosfilt_varying": _STABILITY,
    "state_variable_filter": "checks cutoff and Q ranges first (varying.py _trajectory)",
    "allpass_cascade": _RANGE_CHECKS,
    "allpass_sos": _RANGE_CHECKS,
    "band_masks": "spaces its crossovers from a tensor's value (reverb.py band_masks)",
    "biquad": _DESIGN_CHECKS,
    "diode_clipper": "a float64 NumPy/numba simulation on the CPU (reads the input's values)",
    "fdn_reverb": "checks rt60_s's range first (delay.py _rt60_bands); blocks sized by delays",
    "feedback_delay": "checks delay_ms >= one sample and |feedback| < 1 first (delay.py)",
    "filtered_noise": "checks magnitudes >= 0 first (synth.py _check_control)",
    "first_order_allpass_sos": _RANGE_CHECKS,
    "group_delay": _RANGE_CHECKS + " (through allpass_sos, which builds this case's input)",
    "harmonic_synth": "checks amplitudes >= 0 first (synth.py _check_control)",
    "noise_reverb": "checks rt60 and band gains' ranges first (reverb.py _band_param)",
    "noise_reverb_ir": "checks rt60 and band gains' ranges first (reverb.py _band_param)",
    "normalize_sos": _STABILITY,
    "parametric_eq": _DESIGN_CHECKS,
    "parametric_eq_sos": _DESIGN_CHECKS,
    "phase_response": _RANGE_CHECKS + " (through allpass_sos, which builds this case's input)",
    "second_order_allpass_sos": _RANGE_CHECKS,
    "sosfilt": _STABILITY,
    "stretched_allpass_sos": _RANGE_CHECKS,
    "variance_scaling": "checks global_variance >= 0 first (postfilter.py variance_scaling)",
}
"""Ops that cannot run on the meta device, and why (the test checks they still fail)."""


def _public_functions(module) -> set[str]:
    return {n for n in module.__all__ if inspect.isfunction(getattr(module, n))}


def test_every_public_functional_op_has_a_case():
    cases = set(_functional_cases("cpu"))
    missing = _public_functions(F) - cases - set(FUNCTIONAL_WITHOUT_DEVICE)
    assert not missing, f"add a device case (or a reason) for diffx.functional.{sorted(missing)}"
    assert not (cases | set(FUNCTIONAL_WITHOUT_DEVICE)) - _public_functions(F)


# --------------------------------------------------------------------------------------------
# Running a case


def _tensors(out) -> list[torch.Tensor]:
    items = out if isinstance(out, (tuple, list)) else [out]
    return [t for t in items if isinstance(t, torch.Tensor)]


def _scalar_loss(outputs: list[torch.Tensor]) -> torch.Tensor:
    """A loss touching every floating output (the magnitude of complex ones)."""
    parts = [(t.abs() if t.is_complex() else t).square().sum() for t in outputs
             if t.is_floating_point() or t.is_complex()]  # fmt: skip
    return sum(parts)


def _check_on_device(case: Case, device: str, where: str) -> list[torch.Tensor]:
    outputs = _tensors(case.run())
    assert outputs, f"{where}: no tensor output"
    for t in outputs:
        assert t.device.type == torch.device(device).type, f"{where}: output on {t.device}"
        if t.is_floating_point():
            assert bool(torch.isfinite(t).all()), f"{where}: output not finite"
    if not case.differentiable:
        assert not any(t.requires_grad for t in outputs), f"{where}: documented gradient-free"
        return outputs
    assert case.leaves, f"{where}: a differentiable case needs inputs requiring grad"
    grads = torch.autograd.grad(_scalar_loss(outputs), case.leaves, allow_unused=True)
    assert any(g is not None for g in grads), f"{where}: no input received a gradient"
    for i, g in enumerate(grads):
        if g is None:
            continue
        assert g.device.type == torch.device(device).type, f"{where}: gradient {i} on {g.device}"
        assert bool(torch.isfinite(g).all()), f"{where}: gradient {i} not finite"
    return outputs


@pytest.mark.parametrize("name", sorted(_functional_cases("cpu")))
def test_functional_op_runs_forward_and_backward_on_device(name, device):
    case = _functional_cases(device)[name]()
    outputs = _check_on_device(case, device, f"diffx.functional.{name} on {device}")
    for t, leaf in zip(outputs, case.leaves):
        # Floating outputs keep the inputs' precision (float32 here) wherever they are made.
        if t.is_floating_point() and leaf.is_floating_point():
            assert t.dtype == leaf.dtype, f"{name}: {t.dtype} from {leaf.dtype} inputs"


def _check_meta(cases: dict, name: str, unsupported: dict[str, str], where: str) -> None:
    if name in unsupported:
        try:
            cases("meta")[name]().run()
        except Exception:  # noqa: BLE001 - documented as failing; any error will do
            return
        pytest.fail(f"{where} now runs on meta: take it off the unsupported list "
                    f"({unsupported[name]!r}) so its shapes are checked")  # fmt: skip
    expected = [(t.shape, t.dtype) for t in _tensors(cases("cpu")[name]().run())]
    got = [(t.shape, t.dtype) for t in _tensors(cases("meta")[name]().run())]
    assert got == expected, f"{where} on meta: {got}, on the CPU: {expected}"


@pytest.mark.parametrize("name", sorted(_functional_cases("cpu")))
def test_functional_op_infers_shapes_on_meta(name):
    _check_meta(_functional_cases, name, FUNCTIONAL_META_UNSUPPORTED, f"diffx.functional.{name}")


# --------------------------------------------------------------------------------------------
# Effects


def _effect_case(effect: nn.Module, device, params: bool = True, grad_x: bool = True) -> Case:
    effect = effect.to(device)
    # Mono unless the effect takes a set channel count (StereoWidth: stereo).
    x = _audio(device, channels=getattr(effect, "CHANNELS", None) or 1)
    if not grad_x:
        x = x.detach()
    if not params:
        return _case(lambda: effect(x), x)
    p = _leaf(torch.rand(B, effect.parameter_size(), generator=torch.Generator().manual_seed(9)),
              device)  # fmt: skip
    return _case(lambda: effect(x, p), x, p)


def _effect_cases(device) -> dict[str, Callable[[], Case]]:
    def simple(cls, **kwargs):
        return lambda: _effect_case(cls(SR, **kwargs), device)

    def proxy_chain():
        chain = effects.EffectChain([effects.Gain(SR), effects.Compressor(SR)])
        proxy = effects.NeuralProxy.for_effect(chain.effects[1], n_blocks=1, channels=4)
        return _effect_case(effects.ProxyChain(chain, [None, proxy]), device)

    def pedalboard(make):
        # Not differentiable: trained through SPSA, which gives the parameters a gradient.
        return lambda: _effect_case(effects.SPSAChain(make()), device, grad_x=False)

    def diode_clipper():
        x = _audio(device).detach()
        clipper = effects.DiodeClipper(SR, oversampling=2).to(device)
        return _case(lambda: clipper(x), differentiable=False)

    return {
        "AllpassCascade": simple(effects.AllpassCascade, n_second=2),
        "AutoWah": simple(effects.AutoWah),
        "ModulatedFilter": simple(effects.ModulatedFilter, mode="bandpass"),
        "Compressor": simple(effects.Compressor),
        "Expander": simple(effects.Expander),
        "Limiter": simple(effects.Limiter, link="none"),
        "NoiseGate": simple(effects.NoiseGate),
        "Delay": simple(effects.Delay),
        "DiodeClipper": diode_clipper,
        "Distortion": simple(effects.Distortion),
        "FDNReverb": simple(effects.FDNReverb, n_lines=4),
        "FeedbackDelay": simple(effects.FeedbackDelay),
        "EffectChain": lambda: _effect_case(
            effects.EffectChain([effects.Gain(SR), effects.ParametricEQ(SR, n_bands=2)]), device
        ),
        "Gain": simple(effects.Gain),
        "NeuralProxy": lambda: _effect_case(
            effects.NeuralProxy.for_effect(effects.Gain(SR), n_blocks=1, channels=4), device
        ),
        "NoiseReverb": simple(effects.NoiseReverb, n_bands=3, length_s=0.05),
        "ParametricEQ": simple(effects.ParametricEQ, n_bands=2),
        "PedalboardCompressor": pedalboard(lambda: effects.PedalboardCompressor(SR)),
        "PedalboardEffect": pedalboard(lambda: effects.PedalboardEffect(
            SR, "Gain", {"gain_db": [-12.0, 12.0, 0.0]})),  # fmt: skip
        "PedalboardParametricEQ": pedalboard(lambda: effects.PedalboardParametricEQ(SR)),
        "ProxyChain": proxy_chain,
        "SPSAChain": lambda: _effect_case(
            effects.SPSAChain(effects.EffectChain([effects.Gain(SR)])), device, grad_x=False
        ),
        "Pan": simple(effects.Pan),
        "StereoWidth": simple(effects.StereoWidth),
    }


# Effects whose output has another channel count than their input (mono in, stereo out).
EFFECT_OUTPUT_CHANNELS = {"Pan": 2, "StereoWidth": 2}


EFFECTS_WITHOUT_CASE = {"Effect": "the abstract base (subclasses implement process)"}
EFFECTS_META_UNSUPPORTED = {
    "Limiter": FUNCTIONAL_META_UNSUPPORTED["limiter"],
    "AllpassCascade": FUNCTIONAL_META_UNSUPPORTED["allpass_cascade"],
    "AutoWah": FUNCTIONAL_META_UNSUPPORTED["auto_wah"],
    "ModulatedFilter": FUNCTIONAL_META_UNSUPPORTED["modulated_filter"],
    "DiodeClipper": "a float64 NumPy/numba simulation on the CPU",
    "FDNReverb": FUNCTIONAL_META_UNSUPPORTED["fdn_reverb"],
    "FeedbackDelay": FUNCTIONAL_META_UNSUPPORTED["feedback_delay"],
    "EffectChain": "holds a ParametricEQ: " + FUNCTIONAL_META_UNSUPPORTED["parametric_eq"],
    "NoiseReverb": FUNCTIONAL_META_UNSUPPORTED["noise_reverb"],
    "ParametricEQ": FUNCTIONAL_META_UNSUPPORTED["parametric_eq"],
    "PedalboardCompressor": "pedalboard processes NumPy audio on the CPU",
    "PedalboardEffect": "pedalboard processes NumPy audio on the CPU",
    "PedalboardParametricEQ": "pedalboard processes NumPy audio on the CPU",
}
PEDALBOARD = {"PedalboardCompressor", "PedalboardEffect", "PedalboardParametricEQ"}


def _public_modules(module) -> set[str]:
    return {n for n in module.__all__
            if inspect.isclass(c := getattr(module, n)) and issubclass(c, nn.Module)}  # fmt: skip


def test_every_public_effect_has_a_case():
    cases = set(_effect_cases("cpu"))
    missing = _public_modules(effects) - cases - set(EFFECTS_WITHOUT_CASE)
    assert not missing, f"add a device case (or a reason) for diffx.effects.{sorted(missing)}"
    assert not (cases | set(EFFECTS_WITHOUT_CASE)) - _public_modules(effects)


def _skip_without_pedalboard(name):
    if name in PEDALBOARD and requires_pedalboard.args[0]:
        pytest.skip("needs pedalboard")


@pytest.mark.parametrize("name", sorted(_effect_cases("cpu")))
def test_effect_runs_forward_and_backward_on_device(name, device):
    _skip_without_pedalboard(name)
    outputs = _check_on_device(_effect_cases(device)[name](), device, f"{name} on {device}")
    channels = EFFECT_OUTPUT_CHANNELS.get(name, 1)
    assert outputs[0].shape == (B, channels, T) and outputs[0].dtype == torch.float32


@pytest.mark.parametrize("name", sorted(_effect_cases("cpu")))
def test_effect_infers_shapes_on_meta(name):
    _skip_without_pedalboard(name)
    _check_meta(_effect_cases, name, EFFECTS_META_UNSUPPORTED, f"diffx.effects.{name}")


# --------------------------------------------------------------------------------------------
# Tasks: one short fit on the device


class _GradientProbe(pl.Callback):
    """Checks what every optimizer step is about to apply, and keeps the training losses."""

    def __init__(self, device: str):
        self.device_type = torch.device(device).type
        self.steps = 0
        self.losses: list[torch.Tensor] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]  # fmt: skip
        assert grads, "an optimizer step without gradients"
        for g in grads:
            assert g.device.type == self.device_type, f"gradient on {g.device}"
            assert bool(torch.isfinite(g).all()), "non-finite gradient"
        self.steps += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self.losses.append(loss.detach())


def _batches(*batches: dict) -> torch.utils.data.DataLoader:
    # batch_size=None: each item is a ready batch (Lightning moves it to the device).
    return torch.utils.data.DataLoader(list(batches), batch_size=None)


def _antialias(tmp_path):
    from diffx.io import save_model
    from diffx.nn import LSTMAmp

    sr = 44100
    save_model(LSTMAmp(hidden_size=4, sample_rate=sr), tmp_path / "teacher.json")
    task = tasks.AntiAliasFineTuning(str(tmp_path / "teacher.json"), sample_rate=sr,
                                     frame_fraction=1.0, export_name=None)  # fmt: skip
    n = 2 * 4096  # the NMR needs frames of at least 4096 samples after the warm-up
    t = torch.arange(n) / sr
    f0 = torch.tensor([220.0, 330.0])
    x = 0.5 * torch.sin(2 * torch.pi * f0[:, None, None] * t)
    return task, _batches({"input": x, "f0_hz": f0})


def _effect_modeling(tmp_path):
    from diffx.nn import LSTMAmp

    task = tasks.EffectModeling(LSTMAmp(hidden_size=4, sample_rate=SR), sample_rate=SR,
                                warmup_samples=64, frame_samples=256, export_name=None)  # fmt: skip
    x = _audio("cpu", samples=1024).detach()
    return task, _batches({"input": x, "target": torch.tanh(2 * x)})


def _phase_alignment(tmp_path):
    from diffx.data import PhaseAlignmentDataModule
    from diffx.nn import BiasNet

    sr = 8000
    gen = torch.Generator().manual_seed(10)
    dry = 0.3 * torch.randn(1, sr, generator=gen)
    wet = F.allpass_cascade(dry[None].double(), sr, "second_order", pole_radius=0.8,
                            freq_hz=700.0)[0].float()  # fmt: skip
    data = PhaseAlignmentDataModule.from_tensors(dry, wet, sr, bulk_delay_samples=0, polarity=1,
                                                 n_fft=512, crop_samples=1024, batch_size=2,
                                                 steps_per_epoch=2)  # fmt: skip
    cascade = BiasNet(sr, "second_order", n_second=1, hidden_sizes=(8,))
    task = tasks.PhaseAlignment(sr, cascade, fft_sizes=(256, 128), init="network",
                                export_stem=None, measurement=data.measurement)  # fmt: skip
    return task, data


def _proxy_training(tmp_path):
    task = tasks.ProxyTraining(effects.Gain(SR), sample_rate=SR, n_blocks=1, channels=4,
                               export_name=None)  # fmt: skip
    # (2048 samples: the MR-STFT loss's largest FFT)
    return task, _batches({"input": _audio("cpu", samples=2048).detach()})


def _style_transfer(tmp_path):
    from diffx.nn import SpectralEncoder

    chain = effects.EffectChain([effects.ParametricEQ(SR, n_bands=2), effects.Compressor(SR)])
    encoder = SpectralEncoder(SR, n_fft=256, hop_length=128, channels=(4, 8), embed_dim=16)
    task = tasks.StyleTransfer(chain=chain, encoder=encoder, sample_rate=SR, controller_hidden=16)
    x = _audio("cpu", samples=2048).detach()
    batch = {"input": x, "reference": x.flip(-1), "target": 0.5 * x.flip(-1)}
    return task, _batches(batch)


def _timbre_transfer(tmp_path):
    task = tasks.TimbreTransfer(hidden_size=8, gru_size=8, n_harmonics=4, n_noise_bands=5,
                                reverb_seconds=0.05, fft_sizes=(256, 128), crepe_model="tiny",
                                f0_metric=False)  # fmt: skip
    frames = 16
    f0 = torch.linspace(200.0, 300.0, frames).expand(B, frames).contiguous()
    loudness = torch.full((B, frames), -30.0)
    audio = _audio("cpu", samples=frames * task.hop).detach()
    return task, _batches({"f0_hz": f0, "loudness_db": loudness, "audio": audio})


def _gan_postfilter(tmp_path):
    from diffx.data.postfilter import PostFilterDataModule
    from tests.data.test_postfilter import LAYOUT, write_pairs

    root = write_pairs(tmp_path / "pairs", splits=("train", "valid"), n=2, frames=80)
    data = PostFilterDataModule(str(root), segment_frames=64, batch_size=2, segments_per_epoch=2)
    tiny = {"mgc": {"channels": 4, "disc_channels": 4, "smoothed_width": 3, "disc_padding": None}}
    task = tasks.GANPostFilter(LAYOUT.to_dict(), settings=tiny, training_statistics=data.statistics)
    return task, data


TASK_CASES: dict[str, Callable] = {
    "AntiAliasFineTuning": _antialias,
    "EffectModeling": _effect_modeling,
    "GANPostFilter": _gan_postfilter,
    "PhaseAlignment": _phase_alignment,
    "ProxyTraining": _proxy_training,
    "StyleTransfer": _style_transfer,
    "TimbreTransfer": _timbre_transfer,
}
TASKS_WITHOUT_CASE = {"AudioTask": "the base class of the tasks (no training_step of its own)"}


def test_every_public_task_has_a_case():
    public = {n for n in tasks.__all__ if inspect.isclass(c := getattr(tasks, n))
              and issubclass(c, pl.LightningModule)}  # fmt: skip
    missing = public - set(TASK_CASES) - set(TASKS_WITHOUT_CASE)
    assert not missing, f"add a device case (or a reason) for diffx.tasks.{sorted(missing)}"
    assert not (set(TASK_CASES) | set(TASKS_WITHOUT_CASE)) - public


@pytest.mark.parametrize("name", sorted(TASK_CASES))
def test_task_trains_a_step_on_device(name, device, tmp_path):
    task, data = TASK_CASES[name](tmp_path)
    probe = _GradientProbe(device)
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else device,
        devices=1,
        max_steps=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[probe],
    )
    with warnings.catch_warnings():
        # Lightning's advice for tiny runs (few workers, a batch size it cannot infer).
        warnings.simplefilter("ignore", UserWarning)
        trainer.fit(task, datamodule=data) if isinstance(data, pl.LightningDataModule) else (
            trainer.fit(task, train_dataloaders=data))  # fmt: skip
    assert probe.steps >= 1, f"{name}: no optimizer step ran"
    for loss in probe.losses:
        assert loss.device.type == torch.device(device).type and bool(torch.isfinite(loss))
    for pname, p in task.named_parameters():
        assert p.device.type == torch.device(device).type, f"{name}.{pname} on {p.device}"
        assert bool(torch.isfinite(p).all()), f"{name}.{pname} not finite after a step"


# --------------------------------------------------------------------------------------------
# float64 on devices without it (Apple MPS): the one route, diffx._validation.wide_dtype


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:1", "meta"])
def test_wide_dtype_is_float64_where_the_device_has_it(name):
    # Device objects only: no tensor is made, so no such device need exist.
    assert validation.supports_float64(torch.device(name))
    assert validation.wide_dtype(torch.device(name), "x") == torch.float64


@pytest.mark.parametrize("name", ["mps", "mps:0"])
def test_wide_dtype_refuses_mps_naming_the_work(name):
    assert not validation.supports_float64(name)
    with pytest.raises(ValueError, match=r"sosfilt's filter states are computed in float64.*mps"):
        validation.wide_dtype(torch.device(name), "sosfilt's filter states")


def _float64_cases():
    """(name, call) of ops that compute part of their work in float64 on the input's device;
    their inputs are made here, before the device loses float64 in the test below."""
    from diffx.kernels.iir import sos_cascade
    from diffx.nn import BiasNet

    x, sos = _audio("cpu").detach(), _sos("cpu").detach()
    rows_sos = F.normalize_sos(sos).contiguous()  # (B, 2, 5), one row per item (mono)
    frames = torch.rand(B, 9, 3)
    spsa = effects.SPSAChain(effects.Gain(SR))
    params = torch.rand(B, 1, requires_grad=True)
    cascade = BiasNet(SR, "second_order", n_second=1, hidden_sizes=(4,))
    eq = {k: v.detach() for k, v in _eq_params("cpu").items()}
    return {
        "sosfilt": lambda: F.sosfilt(x, sos),
        "scan back end": lambda: sos_cascade(x[:, 0], rows_sos, backend="scan"),
        "biquad": lambda: F.biquad("peaking", 1000.0, 0.7, SR, 3.0),
        "parametric_eq": lambda: F.parametric_eq(x, SR, **eq),
        "allpass_cascade": lambda: F.allpass_cascade(x, SR, pole_radius=0.8, freq_hz=500.0),
        "upsample_frames": lambda: F.upsample_frames(frames, T),
        "harmonic_synth": lambda: F.harmonic_synth(frames[..., 0] * 500 + 100, frames[..., 1],
                                                   frames, SR, n_samples=T),  # fmt: skip
        "band_masks": lambda: F.band_masks(129, SR, [500.0]),
        "feedback_delay": lambda: F.feedback_delay(x, SR, 5.0, 0.5, lowpass_hz=2000.0),
        "fdn_reverb": lambda: F.fdn_reverb(x, SR, 0.5, n_lines=4),
        "SPSAChain": lambda: spsa(x, params).sum().backward(),
        "BiasNet": lambda: cascade(),
    }


# op -> the work its message names (None: not pinned, the wording is synth.py's own)
FLOAT64_OPS = {
    "sosfilt": "sosfilt's coefficients",
    "scan back end": "the 'scan' IIR back end's filter states",
    "biquad": "biquad designs",
    "parametric_eq": "parametric_eq's designs",
    "allpass_cascade": "allpass_cascade's designs",
    "upsample_frames": None,
    "harmonic_synth": None,
    "band_masks": "band_masks' filterbank masks",
    "feedback_delay": "feedback_delay's filter designs",
    "fdn_reverb": "fdn_reverb's absorption filter designs",
    "SPSAChain": "SPSA's output differences",
    "BiasNet": "the allpass controller's filter designs",
}


@pytest.mark.parametrize("name", sorted(FLOAT64_OPS))
def test_ops_needing_float64_refuse_a_device_without_it_by_name(name, monkeypatch):
    call = _float64_cases()[name]
    # The CPU stands in for a device without float64 (no MPS here): every device-side float64
    # cast goes through wide_dtype, so each op refuses with the helper's message, naming itself,
    # instead of computing in float32 or failing inside torch.
    monkeypatch.setattr(validation, "_NO_FLOAT64_DEVICE_TYPES", frozenset({"mps", "cpu"}))
    with pytest.raises(ValueError, match="computed in float64, which the cpu device") as error:
        call()
    assert FLOAT64_OPS[name] is None or str(error.value).startswith(FLOAT64_OPS[name])


def test_float32_ops_run_on_a_device_without_float64(monkeypatch):
    x = _audio("cpu").detach()
    monkeypatch.setattr(validation, "_NO_FLOAT64_DEVICE_TYPES", frozenset({"mps", "cpu"}))
    # Ops whose work is all in the audio's dtype are unaffected.
    for y in (F.gain(x, 3.0), F.hard_clip(x, -3.0, antialiasing="adaa1"),
              F.fft_convolve(x, x[..., :16]), F.compressor(x, SR, -20.0, 4.0, 1.0, 20.0,
                                                            backend="torch")):  # fmt: skip
        assert y.dtype == torch.float32 and bool(torch.isfinite(y).all())
