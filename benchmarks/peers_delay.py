"""Feedback delay (echo) and FDN reverb benchmarked against their peers (issue 24), in the form
of :mod:`peers`: an :class:`peers.Op` per operation, in :data:`OPS`.

``fdn_reverb``: 8 delay lines (distinct primes of 10-30 ms, ``diffx.functional.fdn_delays``),
Householder mixing ``I - (2/N) 1 1^T``, input and output gains ``1/sqrt(N)``, per line an
absorption filter of two sections (RBJ low and high shelves at 250 Hz and 4 kHz, the
broadband gain in the first one's numerator) set from an RT60 per band
(``diffx.functional.delay.fdn_absorption_sos``, Jot & Chaigne), wet output only. One RT60
triple per case, shared by the batch: FLAMO's modules hold one set of parameters for all
items.

- diffx: :func:`diffx.functional.fdn_reverb`, the exact time-domain recursion (numba forward,
  fused adjoint backward).
- flamo (``pip install --no-deps flamo``): the same network from FLAMO's processors
  (``Gain`` in/out, ``Recursion(Series(parallelDelay(isint=True), parallelSOSFilter),
  HouseholderMatrix)``) inside a ``Shell`` between ``FFT`` and ``iFFT``: frequency sampling of
  ``c^T (I - H D A)^-1 H D b`` on ``nfft`` bins, i.e. circular convolution with the impulse
  response aliased to ``nfft`` samples. ``nfft`` is the power of two that covers the signal
  plus the time the tail takes to fall 140 dB (below float32's resolution), so its output is
  exact to float32; a shorter FFT is faster and wrong by the aliased tail. The absorption
  sections are computed from the RT60s inside the timed call and put in place of the filter
  module's parameter, so gradients reach the RT60s as for diffx. FLAMO imports nnAudio and
  pyfar (its loss functions) and torchaudio (a filterbank) at package import; none of them is
  used here, and where one does not import it is replaced by a stub that raises if called
  (:func:`_import_flamo`).

``feedback_delay``: one delay line per item, 50-400 ms (fractional), feedback 0.3-0.8,
Butterworth low pass 2-8 kHz and high pass 50-200 Hz in the loop, wet output only.

- diffx: :func:`diffx.functional.feedback_delay` (the same kernel, one line).
- No peer: no installed library has a differentiable echo with a filter in its loop
  (pedalboard's ``Delay`` has no loop filter and no gradient). A plain-PyTorch per-sample loop
  (autograd through every sample) was tried as a baseline and dropped: one forward at batch
  8 x 131072 ran for minutes (over the benchmark's 20 s limit per call), so the row holds
  diffx's times and its correctness against the float64 loop only.

The references are float64 per-sample loops (numba) written here, independent of diffx's
kernel; both ops take the loop filters' coefficients from the same designs (diffx's
``fdn_absorption_sos`` for the FDN, scipy's ``butter`` for the echo).

Design choice (time domain rather than frequency sampling): ``OMP_NUM_THREADS=1
NUMBA_NUM_THREADS=1 python benchmarks/fdn_domains.py``, one run with nothing else running
(2026-12-08), forward + backward on 2 x 65536 samples at 48 kHz, median of 7 calls:

- FDN, 8 lines, RT60s 2.0/1.5/0.8 s: time domain 53.9 ms, frequency sampling (2 x 65536 bins,
  float64) 347.1 ms, the latter wrong by 1.3e-3 of the peak (the aliased tail);
- echo (delays 123 and 250 ms, feedback 0.7 and 0.5, low and high pass in the loop): time
  domain 9.1 ms, frequency sampling 23.9 ms, wrong by 1.9e-2 of the peak.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import sys
import types
from collections import OrderedDict

import numba
import numpy as np
import scipy.signal
import torch
from peers import SAMPLE_RATE, Impl, Op, Params, noise_input

N_LINES = 8
# Decay the FFT of the frequency-sampled FDN must cover beyond the signal: 140 dB, below the
# resolution of float32 audio (~ -138 dB), as a multiple of the longest RT60 (60 dB).
TAIL_DB = 140.0


@functools.cache
def fdn_delays() -> tuple[int, ...]:
    from diffx.functional import fdn_delays as make

    return tuple(make(N_LINES, SAMPLE_RATE))


def householder(n: int) -> np.ndarray:
    return np.eye(n) - (2.0 / n) * np.ones((n, n))


# --------------------------------------------------------------------------------------------
# FDN reverb


def _fdn_params(batch: int, rng: np.random.Generator) -> Params:
    low, mid, high = rng.uniform(0.6, 1.2), rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.5)
    return {name: torch.full((batch,), value, dtype=torch.float64)
            for name, value in (("rt60_low_s", low), ("rt60_mid_s", mid),
                                ("rt60_high_s", high))}  # fmt: skip


def _rt60(p: Params) -> torch.Tensor:
    """``(batch, 3)`` float64 RT60s, low to high."""
    return torch.stack([torch.as_tensor(p[k]) for k in ("rt60_low_s", "rt60_mid_s",
                                                         "rt60_high_s")], 1).double()  # fmt: skip


def _absorption(rt60: torch.Tensor) -> torch.Tensor:
    from diffx.functional.delay import fdn_absorption_sos

    return fdn_absorption_sos(list(fdn_delays()), rt60, SAMPLE_RATE)  # (batch, N, 2, 5)


@numba.njit(cache=True)
def _fdn64(x, delays, a, b, c, sos):  # pragma: no cover - compiled
    """Per-sample float64 FDN: circular buffers, direct-form-I sections."""
    n_lines, n_sections = sos.shape[0], sos.shape[1]
    size = delays.max() + 1
    buf = np.zeros((n_lines, size))
    st = np.zeros((n_lines, n_sections, 4))  # in[n-1], in[n-2], out[n-1], out[n-2]
    u = np.zeros(n_lines)
    y = np.zeros(x.shape[0])
    for n in range(x.shape[0]):
        for i in range(n_lines):
            s = buf[i, (n - delays[i]) % size] if n >= delays[i] else 0.0
            for k in range(n_sections):
                out = (sos[i, k, 0] * s + sos[i, k, 1] * st[i, k, 0] + sos[i, k, 2] * st[i, k, 1]
                       - sos[i, k, 3] * st[i, k, 2] - sos[i, k, 4] * st[i, k, 3])  # fmt: skip
                st[i, k, 1] = st[i, k, 0]
                st[i, k, 0] = s
                st[i, k, 3] = st[i, k, 2]
                st[i, k, 2] = out
                s = out
            u[i] = s
        acc = 0.0
        for i in range(n_lines):
            acc += c[i] * u[i]
        y[n] = acc
        for i in range(n_lines):
            v = b[i] * x[n]
            for j in range(n_lines):
                v += a[i, j] * u[j]
            buf[i, n % size] = v
    return y


def _fdn_reference(x64: np.ndarray, p64: dict[str, np.ndarray]) -> np.ndarray:
    sos = _absorption(_rt60({k: torch.from_numpy(v) for k, v in p64.items()})).numpy()
    delays = np.asarray(fdn_delays(), dtype=np.int64)
    gains = np.full(N_LINES, 1.0 / math.sqrt(N_LINES))
    a = householder(N_LINES)
    return np.stack([_fdn64(x64[i, 0], delays, a, gains, gains, sos[i])[None]
                     for i in range(x64.shape[0])])  # fmt: skip


def _diffx_fdn(x: torch.Tensor, p: Params) -> torch.Tensor:
    import diffx.functional as F

    return F.fdn_reverb(x, SAMPLE_RATE, _rt60(p), mix=1.0, delays=list(fdn_delays()))


def install_flamo_stubs() -> None:
    """Make ``import flamo`` work where its unused dependencies do not import (see the module
    docstring): a stub, raising if called, for each of nnAudio, pyfar and torchaudio that
    fails to import. Run at import of this module when FLAMO is installed, so that
    :func:`peers.peer_missing` sees FLAMO importable."""

    def stub(name: str, attrs: tuple[str, ...] = ()) -> None:
        try:
            __import__(name)
            return
        except (ImportError, OSError):  # OSError: torchaudio built for another torch
            for key in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                del sys.modules[key]
        module = types.ModuleType(name)
        module.__version__ = "0.0.0+stub"

        def unavailable(*args, **kwargs):
            raise NotImplementedError(f"{name} stub: unavailable in this benchmark")

        def attribute(attr_name: str):
            # Dunder look-ups (__file__, __path__, __spec__) must fail as for a real module:
            # inspect and torch.library probe them on every loaded module (philtorch's import).
            if attr_name.startswith("__"):
                raise AttributeError(attr_name)
            return unavailable

        for attr in attrs:
            sub = types.ModuleType(f"{name}.{attr}")
            sub.__getattr__ = attribute
            setattr(module, attr, sub)
            sys.modules[f"{name}.{attr}"] = sub
        module.__getattr__ = attribute
        sys.modules[name] = module

    stub("nnAudio", ("features",))
    stub("pyfar")
    stub("torchaudio", ("functional", "transforms"))


def _import_flamo():
    install_flamo_stubs()
    from flamo.processor import dsp, system

    return dsp, system


if importlib.util.find_spec("flamo") is not None:
    install_flamo_stubs()


def flamo_nfft(samples: int, rt60_max_s: float) -> int:
    tail = math.ceil(TAIL_DB / 60.0 * rt60_max_s * SAMPLE_RATE)
    return 1 << math.ceil(math.log2(samples + tail))


@functools.lru_cache(maxsize=4)
def _flamo_model(nfft: int, device: str):
    dsp, system = _import_flamo()
    delays = torch.tensor(fdn_delays())
    fs = int(SAMPLE_RATE)
    input_gain = dsp.Gain(size=(N_LINES, 1), nfft=nfft, device=device)
    output_gain = dsp.Gain(size=(1, N_LINES), nfft=nfft, device=device)
    line_delays = dsp.parallelDelay(size=(N_LINES,), max_len=int(delays.max()), isint=True,
                                    nfft=nfft, fs=fs, device=device)  # fmt: skip
    # normalize_a0=False: the sections come with a0 = 1, and FLAMO's normalization writes
    # slices of one tensor in place, which breaks the backward once its input requires grad.
    absorption = dsp.parallelSOSFilter(size=(N_LINES,), n_sections=2, nfft=nfft, fs=fs,
                                       device=device, normalize_a0=False)  # fmt: skip
    mixing = dsp.HouseholderMatrix(size=(N_LINES, N_LINES), nfft=nfft, device=device)
    with torch.no_grad():
        input_gain.assign_value(torch.full((N_LINES, 1), 1.0 / math.sqrt(N_LINES)))
        output_gain.assign_value(torch.full((1, N_LINES), 1.0 / math.sqrt(N_LINES)))
        line_delays.assign_value(line_delays.sample2s(delays))
        mixing.assign_value(torch.ones(N_LINES, 1))  # u = 1 / sqrt(N) after its normalization
    # The absorption sections come from the RT60s in each call (see _flamo_fdn).
    del absorption._parameters["param"]
    loop = system.Recursion(
        fF=system.Series(OrderedDict({"delays": line_delays, "absorption": absorption})),
        fB=mixing,
    )
    core = system.Series(OrderedDict({"input_gain": input_gain, "loop": loop,
                                      "output_gain": output_gain}))  # fmt: skip
    return system.Shell(core=core, input_layer=dsp.FFT(nfft), output_layer=dsp.iFFT(nfft)), (
        absorption
    )


def _flamo_fdn(x: torch.Tensor, p: Params) -> torch.Tensor:
    B, _, T = x.shape
    rt60 = _rt60(p)[:1]  # shared by the batch (see _fdn_params)
    model, absorption = _flamo_model(flamo_nfft(T, float(rt60.detach().max())), str(x.device))
    sos = _absorption(rt60)[0].to(x.dtype)  # (N, 2, 5) [b0, b1, b2, a1, a2]
    one = torch.ones_like(sos[..., :1])
    # FLAMO's layout (sections, [b0, b1, b2, a0, a1, a2], lines).
    absorption.param = torch.cat([sos[..., :3], one, sos[..., 3:]], -1).permute(1, 2, 0)
    y = model(x.permute(0, 2, 1))  # (B, nfft, 1)
    return y[:, :T, 0].reshape(B, 1, T)


FDN_REVERB = Op(
    name="fdn_reverb",
    description=(
        "8-line FDN (primes of 10-30 ms, Householder), absorption from RT60 per band "
        "(low 0.6-1.2 s, mid 0.4-0.9 s, high 0.2-0.5 s; shelves at 250 Hz / 4 kHz), wet only"
    ),
    make_params=_fdn_params,
    make_input=noise_input,
    reference=_fdn_reference,
    impls={
        "diffx": Impl(_diffx_fdn, note="fdn_reverb: exact recursion (numba, fused adjoint)",
                      is_diffx=True),
        "flamo": Impl(_flamo_fdn, note="frequency sampling on nfft >= T + 140 dB tail",
                      requires="flamo"),
    },  # fmt: skip
)


# --------------------------------------------------------------------------------------------
# Feedback delay


def _echo_params(batch: int, rng: np.random.Generator) -> Params:
    def draw(lo, hi):
        return torch.from_numpy(rng.uniform(lo, hi, batch))

    return {"delay_ms": draw(50.0, 400.0), "feedback": draw(0.3, 0.8),
            "lowpass_hz": draw(2000.0, 8000.0), "highpass_hz": draw(50.0, 200.0)}  # fmt: skip


def _butter(kind: str, freq_hz: float) -> np.ndarray:
    """Normalized ``[b0, b1, b2, a1, a2]`` of a 2nd-order Butterworth section."""
    sos = scipy.signal.butter(2, freq_hz, kind, fs=SAMPLE_RATE, output="sos")[0]
    return np.r_[sos[:3], sos[4:]] / sos[3]


@numba.njit(cache=True)
def _echo64(x, delay, feedback, sos):  # pragma: no cover - compiled
    whole = int(math.floor(delay))
    frac = delay - whole
    n_sections = sos.shape[0]
    v = np.zeros(x.shape[0])
    y = np.zeros(x.shape[0])
    st = np.zeros((n_sections, 4))
    for n in range(x.shape[0]):
        s = 0.0
        if n - whole >= 0:
            s += (1.0 - frac) * v[n - whole]
        if n - whole - 1 >= 0:
            s += frac * v[n - whole - 1]
        for k in range(n_sections):
            out = (sos[k, 0] * s + sos[k, 1] * st[k, 0] + sos[k, 2] * st[k, 1]
                   - sos[k, 3] * st[k, 2] - sos[k, 4] * st[k, 3])  # fmt: skip
            st[k, 1] = st[k, 0]
            st[k, 0] = s
            st[k, 3] = st[k, 2]
            st[k, 2] = out
            s = out
        v[n] = x[n] + feedback * s
        y[n] = s
    return y


def _echo_reference(x64: np.ndarray, p64: dict[str, np.ndarray]) -> np.ndarray:
    out = []
    for i in range(x64.shape[0]):
        sos = np.stack([_butter("low", p64["lowpass_hz"][i]),
                        _butter("high", p64["highpass_hz"][i])])  # fmt: skip
        delay = p64["delay_ms"][i] * SAMPLE_RATE / 1000.0
        out.append(_echo64(x64[i, 0], delay, p64["feedback"][i], sos)[None])
    return np.stack(out)


def _diffx_echo(x: torch.Tensor, p: Params) -> torch.Tensor:
    import diffx.functional as F

    return F.feedback_delay(x, SAMPLE_RATE, p["delay_ms"], p["feedback"], mix=1.0,
                            lowpass_hz=p["lowpass_hz"], highpass_hz=p["highpass_hz"])  # fmt: skip


FEEDBACK_DELAY = Op(
    name="feedback_delay",
    description=(
        "echo: fractional delay 50-400 ms, feedback 0.3-0.8, Butterworth low pass 2-8 kHz and "
        "high pass 50-200 Hz in the loop, wet only"
    ),
    make_params=_echo_params,
    make_input=noise_input,
    reference=_echo_reference,
    impls={
        "diffx": Impl(_diffx_echo, note="feedback_delay: exact recursion (numba, fused adjoint)",
                      is_diffx=True),
    },  # fmt: skip
)

OPS = {op.name: op for op in (FDN_REVERB, FEEDBACK_DELAY)}
