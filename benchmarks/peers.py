"""The operations benchmarked against peer libraries, one callable per library.

Every operation is described by an :class:`Op`: how to draw its parameters for a batch, a
float64 reference output (``scipy.signal`` for linear filters; for compressors, a float64
NumPy/numba re-implementation of each library's own published algorithm, because the peers
implement different compressors), and one :class:`Impl` per library. All implementations take
the same physical parameters (Hz, dB, Q, ms) and convert them to their library's API inside the
timed call, so gradients reach the physical parameters.

Peers (installed with ``pip install --no-deps`` so that torch is not replaced):

- torchlpc: ``sample_wise_lpc`` does the all-pole part of each biquad; the numerator is a
  grouped ``conv1d``. A chain of these is the exact time-domain baseline.
- dasp-pytorch: frequency-sampling (FSM) approximations of IIR filters with an FFT of at least
  ``2 T - 1`` points; its compressor smooths with the attack time only (release is ignored).
- GRAFX: processors with unconstrained pre-activations, mapped here from physical units; its
  ``fsm`` (FIR of 4000 taps, the default) and ``ssm`` back ends are both timed.
- torchcomp: ``compexp_gain`` (attack/release ballistics on the linear gain), hard knee.
- scipy: ``sosfilt`` on float32 NumPy arrays, forward only, one call per batch item.
- philtorch (optional; same author as torchlpc): ``philtorch.lti.lfilter`` per second-order
  section, a chain like torchlpc's (exact, C++ ``lti_recurN`` kernel on CPU, OpenMP over the
  batch under torch's own ``libgomp``, so ``torch.set_num_threads`` applies). Its PyPI wheels
  pin the torch minor they were built for (0.7.0: ``torch==2.14.*``) and refuse to import next
  to another one, so build it from source against the installed torch (CPU-only when torch has
  no CUDA; several minutes with one compile job)::

      pip install "setuptools>=77.0.3" "setuptools_scm>=8" wheel
      MAX_JOBS=1 pip install --no-deps --no-build-isolation --no-binary=philtorch philtorch==0.7.0

  Without philtorch (or with a wheel that refuses to import) its rows say ``skipped`` and why.

GRAFX imports ``torchaudio`` at module import for its ``lfilter`` back end only. No torchaudio
build exists for this torch, so :func:`_import_grafx` installs a stub module that raises if that
back end is ever used; the back ends benchmarked here never call it.
"""

from __future__ import annotations

import importlib
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import numba
import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F

SAMPLE_RATE = 44100.0

# Compressor settings shared by every library (brief: threshold -20 dB, ratio 4, attack 5 ms,
# release 50 ms, knee 6 dB, no makeup gain).
COMP = {
    "threshold_db": -20.0,
    "ratio": 4.0,
    "attack_ms": 5.0,
    "release_ms": 50.0,
    "knee_db": 6.0,
    "makeup_gain_db": 0.0,
}

Params = dict[str, torch.Tensor]


@dataclass
class Impl:
    """One library's implementation of an op.

    Attributes:
        fn: ``fn(x, params) -> y`` with ``x`` ``(batch, 1, samples)`` float32.
        differentiable: whether forward+backward can be timed.
        reference: ``reference(x64, params64) -> y64`` float64 NumPy oracle for THIS
            implementation's algorithm; ``None`` means the op's scipy reference.
        note: what the implementation is (algorithm, back end, deviations).
        is_diffx: the library under test.
        requires: module an optional peer needs; the benchmark skips the entry, saying why,
            when it does not import (see :func:`peer_missing`).
    """

    fn: Callable[[torch.Tensor, Params], torch.Tensor | np.ndarray]
    differentiable: bool = True
    reference: Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray] | None = None
    note: str = ""
    is_diffx: bool = False
    requires: str | None = None


@dataclass
class Op:
    """A benchmarked operation: parameter sampler, scipy reference and implementations."""

    name: str
    description: str
    make_params: Callable[[int, np.random.Generator], Params]
    make_input: Callable[[int, int, np.random.Generator], torch.Tensor]
    reference: Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray]
    impls: dict[str, Impl] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Inputs


def noise_input(batch: int, samples: int, rng: np.random.Generator) -> torch.Tensor:
    """White noise at -6 dBFS peak-ish level, ``(batch, 1, samples)`` float32."""
    return torch.from_numpy(0.25 * rng.standard_normal((batch, 1, samples))).float()


def dynamic_input(batch: int, samples: int, rng: np.random.Generator) -> torch.Tensor:
    """Noise whose level jumps every 2048 samples between -50 and 0 dB, so a compressor
    attacks and releases throughout."""
    block = 2048
    n_blocks = -(-samples // block)
    level_db = rng.uniform(-50.0, 0.0, size=(batch, 1, n_blocks))
    env = np.repeat(10 ** (level_db / 20), block, axis=-1)[..., :samples]
    x = np.clip(0.5 * rng.standard_normal((batch, 1, samples)), -1, 1) * env
    return torch.from_numpy(x).float()


# --------------------------------------------------------------------------------------------
# RBJ cookbook designs (own implementation, used by the torchlpc peer and the scipy reference)


def rbj(kind: str, freq_hz, gain_db, q, sample_rate: float = SAMPLE_RATE):
    """RBJ-cookbook biquad ``(batch, 6)`` ``[b0, b1, b2, a0, a1, a2]``; torch or NumPy input."""
    lib = torch if isinstance(freq_hz, torch.Tensor) else np
    w0 = 2 * math.pi * freq_hz / sample_rate
    cos_w0, alpha = lib.cos(w0), lib.sin(w0) / (2 * q)
    amp = 10 ** (gain_db / 40)
    if kind == "peaking":
        rows = [1 + alpha * amp, -2 * cos_w0, 1 - alpha * amp,
                1 + alpha / amp, -2 * cos_w0, 1 - alpha / amp]  # fmt: skip
    else:
        s = 1.0 if kind == "low_shelf" else -1.0
        k = 2 * lib.sqrt(amp) * alpha
        rows = [
            amp * ((amp + 1) - s * (amp - 1) * cos_w0 + k),
            s * 2 * amp * ((amp - 1) - s * (amp + 1) * cos_w0),
            amp * ((amp + 1) - s * (amp - 1) * cos_w0 - k),
            (amp + 1) + s * (amp - 1) * cos_w0 + k,
            -s * 2 * ((amp - 1) + s * (amp + 1) * cos_w0),
            (amp + 1) + s * (amp - 1) * cos_w0 - k,
        ]
    return lib.stack(rows, -1) if lib is torch else np.stack(rows, -1)


def peq_sos(p):
    """``(batch, 6, 6)`` PEQ sections (low shelf, 4 peaking, high shelf) from params ``p``."""
    lib = torch if isinstance(p["ls_freq_hz"], torch.Tensor) else np
    rows = [rbj("low_shelf", p["ls_freq_hz"], p["ls_gain_db"], p["ls_q"])]
    for i in range(p["band_freqs_hz"].shape[1]):
        rows.append(
            rbj("peaking", p["band_freqs_hz"][:, i], p["band_gains_db"][:, i], p["band_qs"][:, i])
        )
    rows.append(rbj("high_shelf", p["hs_freq_hz"], p["hs_gain_db"], p["hs_q"]))
    return lib.stack(rows, 1)


def scipy_sosfilt_batch(x: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """``sosfilt`` item by item (each item has its own filter); ``x`` ``(B, 1, T)``."""
    sos = sos / sos[..., 3:4]  # scipy requires a0 = 1
    return np.stack([scipy.signal.sosfilt(sos[i], x[i], axis=-1) for i in range(x.shape[0])])


def scipy_reference(sos_fn):
    def ref(x64: np.ndarray, p64: dict[str, np.ndarray]) -> np.ndarray:
        return scipy_sosfilt_batch(x64, sos_fn(p64))

    return ref


# --------------------------------------------------------------------------------------------
# torchlpc: exact chains of biquads


def _torchlpc_biquad(x: torch.Tensor, sos_row: torch.Tensor) -> torch.Tensor:
    """One section: numerator by grouped conv1d, all-pole part by ``sample_wise_lpc``."""
    from torchlpc import sample_wise_lpc

    B, _, T = x.shape
    norm = sos_row / sos_row[:, 3:4]
    # conv1d correlates, so the taps are reversed to convolve: y[n] = b0 x[n] + b1 x[n-1] + ...
    fir = F.conv1d(F.pad(x.reshape(1, B, T), (2, 0)), norm[:, :3].flip(-1).unsqueeze(1), groups=B)
    a = norm[:, None, 4:6].expand(B, T, 2)
    return sample_wise_lpc(fir.reshape(B, T), a).reshape(B, 1, T)


def torchlpc_chain(x: torch.Tensor, sos: torch.Tensor) -> torch.Tensor:
    for k in range(sos.shape[1]):
        x = _torchlpc_biquad(x, sos[:, k])
    return x


# --------------------------------------------------------------------------------------------
# philtorch: exact chains of biquads, one lfilter call per section


def philtorch_chain(x: torch.Tensor, sos: torch.Tensor) -> torch.Tensor:
    """``philtorch.lti.lfilter`` (transposed direct form II, ``ssm`` back end) per section."""
    from philtorch.lti import lfilter

    B, _, T = x.shape
    y = x.reshape(B, T)
    for k in range(sos.shape[1]):
        norm = sos[:, k] / sos[:, k, 3:4]  # lfilter's a omits a0 = 1
        y = lfilter(norm[:, :3], norm[:, 4:6], y)
    return y.reshape(B, 1, T)


_PHILTORCH_NOTE = "lti.lfilter per section (tdf2, C++ lti_recurN; exact)"


def peer_missing(impl: Impl) -> str | None:
    """``None`` if the optional peer ``impl.requires`` imports, else why it cannot run."""
    if impl.requires is None:
        return None
    try:
        importlib.import_module(impl.requires)
    except (ImportError, OSError) as err:  # OSError: an extension built for another torch
        return f"{impl.requires} not importable ({err}); see benchmarks/peers.py docstring"
    return None


# --------------------------------------------------------------------------------------------
# GRAFX


def _import_grafx():
    """Import GRAFX, stubbing ``torchaudio`` (used only by its ``lfilter`` back end)."""
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError):  # OSError: a torchaudio wheel built for another torch
        for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
            del sys.modules[name]  # the half-imported package
        stub = types.ModuleType("torchaudio")
        stub.__version__ = "0.0.0+stub"
        functional = types.ModuleType("torchaudio.functional")

        def lfilter(*args, **kwargs):
            raise NotImplementedError("torchaudio stub: GRAFX's lfilter back end is unavailable")

        functional.lfilter = lfilter
        stub.functional = functional
        sys.modules["torchaudio"] = stub
        sys.modules["torchaudio.functional"] = functional
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import grafx.processors as processors
    return processors


def _grafx_eq_params(freq_hz, gain_db, q):
    """GRAFX pre-activations: w0 = pi sigmoid(z), alpha = sin(w0) exp(z_q) / 2, A = exp(z_g)."""
    w0 = 2 * math.pi * freq_hz / SAMPLE_RATE
    return torch.logit(w0 / math.pi), torch.log(1.0 / q), gain_db * (math.log(10) / 40)


def _lazy(build: Callable[[], Callable]) -> Callable:
    """Defer building a GRAFX module (and importing GRAFX) to the first call."""
    cache: list[Callable] = []

    def fn(x, p):
        if not cache:
            cache.append(build())
        return cache[0](x, p)

    return fn


def _grafx_kwargs(backend: str) -> dict:
    kw = {"backend": backend}
    if backend == "fsm":
        kw["flashfftconv"] = False  # the CUDA-only FlashFFTConv is not installed
    return kw


# --------------------------------------------------------------------------------------------
# diffx (imported lazily; missing entries are skipped by the benchmark)


def _diffx_filters():
    from diffx.functional import filters

    return filters


def _diffx_biquad(x, p):
    f = _diffx_filters()
    sos = f.biquad("peaking", freq_hz=p["freq_hz"], q=p["q"], sample_rate=SAMPLE_RATE,
                   gain_db=p["gain_db"])  # fmt: skip
    return f.sosfilt(x, sos.unsqueeze(1))


def _diffx_peq(x, p):
    return _diffx_filters().parametric_eq(
        x, SAMPLE_RATE,
        low_shelf_freq_hz=p["ls_freq_hz"], low_shelf_gain_db=p["ls_gain_db"],
        low_shelf_q=p["ls_q"], band_freqs_hz=p["band_freqs_hz"],
        band_gains_db=p["band_gains_db"], band_qs=p["band_qs"],
        high_shelf_freq_hz=p["hs_freq_hz"], high_shelf_gain_db=p["hs_gain_db"],
        high_shelf_q=p["hs_q"],
    )  # fmt: skip


def _diffx_compressor(x, p):
    from diffx.functional.dynamics import compressor

    return compressor(x, SAMPLE_RATE, **{k: p[k] for k in COMP})


def _diffx_compressor_reference(x64: np.ndarray, p64: dict[str, np.ndarray]) -> np.ndarray:
    """diffx's own plain-PyTorch reference back end in float64 (self-consistency only)."""
    import inspect

    from diffx.functional.dynamics import compressor

    kw = {}
    if "backend" in inspect.signature(compressor).parameters:
        kw["backend"] = "torch"
    params = {k: torch.from_numpy(np.asarray(p64[k])) for k in COMP}
    y = compressor(torch.from_numpy(x64), SAMPLE_RATE, **params, **kw)
    return y.detach().numpy()


def diffx_available(impl_name: str, op_name: str) -> str | None:
    """``None`` if the diffx entry can run, else the reason it cannot."""
    try:
        if op_name == "compressor":
            from diffx.functional.dynamics import compressor  # noqa: F401
        else:
            f = _diffx_filters()
            needed = {"biquad": ("biquad", "sosfilt"), "peq": ("parametric_eq",)}
            for name in needed.get(op_name, ("sosfilt",)):
                getattr(f, name)
    except (ImportError, AttributeError) as err:
        return f"diffx entry missing ({err})"
    return None


# --------------------------------------------------------------------------------------------
# Op 1: one peaking biquad


def _biquad_params(batch: int, rng: np.random.Generator) -> Params:
    return {
        "freq_hz": torch.from_numpy(np.exp(rng.uniform(np.log(50), np.log(15000), batch))),
        "gain_db": torch.from_numpy(rng.uniform(-12, 12, batch)),
        "q": torch.from_numpy(np.exp(rng.uniform(np.log(0.3), np.log(6), batch))),
    }


def _biquad_sos64(p):
    return rbj("peaking", p["freq_hz"], p["gain_db"], p["q"])[:, None, :]


def _biquad_dasp(x, p):
    from dasp_pytorch.signal import biquad, lfilter_via_fsm

    b, a = biquad(p["gain_db"], p["freq_hz"], p["q"], SAMPLE_RATE, "peaking")
    return lfilter_via_fsm(x, b, a)


def _grafx_peaking(backend):
    module = _import_grafx().PeakingFilter(**_grafx_kwargs(backend))

    def fn(x, p):
        w0, q_inv, log_gain = _grafx_eq_params(p["freq_hz"], p["gain_db"], p["q"])
        return module(x, w0[:, None], q_inv[:, None], log_gain[:, None])

    return fn


def _scipy_fn(sos_fn):
    def fn(x, p):
        sos = sos_fn({k: v.numpy() for k, v in p.items()}).astype(np.float32)
        return scipy_sosfilt_batch(x.numpy(), sos)

    return fn


BIQUAD = Op(
    name="biquad",
    description="one RBJ peaking biquad, random freq 50-15000 Hz, gain +-12 dB, Q 0.3-6",
    make_params=_biquad_params,
    make_input=noise_input,
    reference=scipy_reference(_biquad_sos64),
    impls={
        "diffx": Impl(_diffx_biquad, note="biquad() + sosfilt()", is_diffx=True),
        "torchlpc": Impl(
            lambda x, p: torchlpc_chain(
                x, rbj("peaking", p["freq_hz"], p["gain_db"], p["q"])[:, None]
            ),
            note="sample_wise_lpc + conv1d FIR (exact)",
        ),
        "philtorch": Impl(
            lambda x, p: philtorch_chain(
                x, rbj("peaking", p["freq_hz"], p["gain_db"], p["q"])[:, None]
            ),
            note=_PHILTORCH_NOTE,
            requires="philtorch",
        ),
        "dasp-pytorch": Impl(_biquad_dasp, note="signal.biquad + lfilter_via_fsm (FSM)"),
        "grafx-fsm": Impl(
            _lazy(lambda: _grafx_peaking("fsm")), note="PeakingFilter, fsm back end (4000 taps)"
        ),
        "grafx-ssm": Impl(_lazy(lambda: _grafx_peaking("ssm")), note="PeakingFilter, ssm back end"),
        "scipy": Impl(
            _scipy_fn(_biquad_sos64), differentiable=False, note="sosfilt float32, forward only"
        ),
    },  # fmt: skip
)


# --------------------------------------------------------------------------------------------
# Op 2: 6-band parametric EQ


def _peq_params(batch: int, rng: np.random.Generator) -> Params:
    lo = np.array([200.0, 800.0, 2000.0, 4000.0])  # DeepAFx-ST band ranges (ANCHORS.md)
    hi = np.array([2000.0, 4000.0, 8000.0, 10800.0])
    u = rng.uniform(size=(batch, 4))
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64))  # noqa: E731
    return {
        "ls_freq_hz": t(np.exp(rng.uniform(np.log(20), np.log(200), batch))),
        "ls_gain_db": t(rng.uniform(-12, 12, batch)),
        "ls_q": t(rng.uniform(0.5, 1.0, batch)),
        "band_freqs_hz": t(np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo)))),
        "band_gains_db": t(rng.uniform(-12, 12, (batch, 4))),
        "band_qs": t(np.exp(rng.uniform(np.log(0.3), np.log(6), (batch, 4)))),
        "hs_freq_hz": t(np.exp(rng.uniform(np.log(4000), np.log(10800), batch))),
        "hs_gain_db": t(rng.uniform(-12, 12, batch)),
        "hs_q": t(rng.uniform(0.5, 1.0, batch)),
    }


def _peq_dasp(x, p):
    from dasp_pytorch.functional import parametric_eq

    bands = {}
    for i in range(4):
        bands[f"band{i}_gain_db"] = p["band_gains_db"][:, i]
        bands[f"band{i}_cutoff_freq"] = p["band_freqs_hz"][:, i]
        bands[f"band{i}_q_factor"] = p["band_qs"][:, i]
    return parametric_eq(
        x, SAMPLE_RATE,
        low_shelf_gain_db=p["ls_gain_db"], low_shelf_cutoff_freq=p["ls_freq_hz"],
        low_shelf_q_factor=p["ls_q"],
        high_shelf_gain_db=p["hs_gain_db"], high_shelf_cutoff_freq=p["hs_freq_hz"],
        high_shelf_q_factor=p["hs_q"], **bands,
    )  # fmt: skip


def _grafx_peq(backend):
    module = _import_grafx().ParametricEqualizer(num_filters=6, **_grafx_kwargs(backend))

    def fn(x, p):
        freqs = torch.cat(
            [p["ls_freq_hz"][:, None], p["band_freqs_hz"], p["hs_freq_hz"][:, None]], 1
        )
        gains = torch.cat(
            [p["ls_gain_db"][:, None], p["band_gains_db"], p["hs_gain_db"][:, None]], 1
        )
        qs = torch.cat([p["ls_q"][:, None], p["band_qs"], p["hs_q"][:, None]], 1)
        w0, q_inv, log_gain = _grafx_eq_params(freqs, gains, qs)
        return module(x, w0[:, None], q_inv[:, None], log_gain[:, None])  # (B, C=1, K)

    return fn


PEQ = Op(
    name="peq",
    description="6-band parametric EQ (low shelf, 4 peaking, high shelf), random per item",
    make_params=_peq_params,
    make_input=noise_input,
    reference=scipy_reference(peq_sos),
    impls={
        "diffx": Impl(_diffx_peq, note="parametric_eq()", is_diffx=True),
        "torchlpc": Impl(
            lambda x, p: torchlpc_chain(x, peq_sos(p)), note="chain of 6 exact torchlpc biquads"
        ),
        "philtorch": Impl(
            lambda x, p: philtorch_chain(x, peq_sos(p)),
            note=f"6 sections: {_PHILTORCH_NOTE}",
            requires="philtorch",
        ),
        "dasp-pytorch": Impl(_peq_dasp, note="functional.parametric_eq (FSM)"),
        "grafx-fsm": Impl(
            _lazy(lambda: _grafx_peq("fsm")), note="ParametricEqualizer, fsm (4000 taps)"
        ),
        "grafx-ssm": Impl(
            _lazy(lambda: _grafx_peq("ssm")), note="ParametricEqualizer, ssm back end"
        ),
        "scipy": Impl(
            _scipy_fn(peq_sos), differentiable=False, note="sosfilt float32, forward only"
        ),
    },  # fmt: skip
)


# --------------------------------------------------------------------------------------------
# Op 3: compressor. Each library implements a different algorithm, so each is checked against
# a float64 re-implementation of its own algorithm (written from the library's documentation
# and source, not copied); the scipy column does not apply.


def _comp_params(batch: int, rng: np.random.Generator) -> Params:
    return {k: torch.full((batch,), v, dtype=torch.float64) for k, v in COMP.items()}


def _ms2coef(ms: float) -> float:
    """torchcomp's convention: 1 - exp(-2200 / (ms * sr)) (2.2 = ln 9, 10-90 % rise time)."""
    return 1.0 - math.exp(-2200.0 / (ms * SAMPLE_RATE))


@numba.njit(cache=True)
def _ballistics64(f, zi, coef_fall, coef_rise):  # pragma: no cover - compiled
    """g[n] = g[n-1] + c (f[n] - g[n-1]), c = coef_fall if f[n] < g[n-1] else coef_rise."""
    B, T = f.shape
    y = np.empty_like(f)
    for b in range(B):
        g = zi
        for t in range(T):
            c = coef_fall if f[b, t] < g else coef_rise
            g = g + c * (f[b, t] - g)
            y[b, t] = g
    return y


def _torchcomp_fn(x, p):
    from torchcomp import compexp_gain, ms2coef

    B, C, T = x.shape
    level = x.abs().amax(1).clamp_min(1e-7)  # peak detector; torchcomp requires level > 0
    # The expander branch is disabled by a threshold far below any level (-1000 dB).
    gain = compexp_gain(
        level, p["threshold_db"], p["ratio"], -1000.0, 0.5,
        ms2coef(p["attack_ms"], SAMPLE_RATE), ms2coef(p["release_ms"], SAMPLE_RATE),
    )  # fmt: skip
    return x * (gain * 10 ** (p["makeup_gain_db"][:, None] / 20)).unsqueeze(1)


def _torchcomp_ref(x64, p64):
    level = np.maximum(np.abs(x64).max(1), 1e-7)
    t, r = COMP["threshold_db"], COMP["ratio"]
    g_db = np.minimum(0.0, (1 - 1 / r) * (t - 20 * np.log10(level)))
    gain = _ballistics64(10 ** (g_db / 20), 1.0, _ms2coef(COMP["attack_ms"]),
                         _ms2coef(COMP["release_ms"]))  # fmt: skip
    return x64 * (gain * 10 ** (COMP["makeup_gain_db"] / 20))[:, None, :]


def _dasp_comp_fn(x, p):
    from dasp_pytorch.functional import compressor

    return compressor(x, SAMPLE_RATE, **{k: p[k] for k in COMP})


def _dasp_comp_ref(x64, p64):
    """dasp: Giannoulis soft-knee curve on the instantaneous level, then a one-pole low-pass
    (attack time only, alpha = exp(-ln 9 / (sr t_A))) of the dB gain."""
    t, r, w = COMP["threshold_db"], COMP["ratio"], COMP["knee_db"]
    x_db = 20 * np.log10(np.maximum(np.abs(x64.sum(1, keepdims=True)), 1e-8))
    knee = (x_db >= t - w / 2) & (x_db <= t + w / 2)
    y_db = np.where(knee, x_db + (1 / r - 1) * (x_db - t + w / 2) ** 2 / (2 * w), x_db)
    y_db = np.where(x_db > t + w / 2, t + (x_db - t) / r, y_db)
    alpha = math.exp(-math.log(9) / (SAMPLE_RATE * COMP["attack_ms"] / 1e3))
    g = scipy.signal.lfilter([1 - alpha], [1, -alpha], y_db - x_db, axis=-1)
    return x64 * 10 ** ((g + COMP["makeup_gain_db"]) / 20)


# GRAFX's compressor works on the natural log of the channel-mean energy, subtracts 6 from the
# threshold internally, and applies exp(log-energy gain) to the amplitude, which doubles the
# gain in dB. The mapping below gives the same static curve in amplitude dB as threshold
# -20 dB, ratio 4, knee 6 dB: in log-energy units T = thr * ln10/10, W = knee * ln10/10, and a
# ratio R_g with 2 (1/R_g - 1) = 1/R - 1.
_LN10_10 = math.log(10) / 10
_GRAFX_T = COMP["threshold_db"] * _LN10_10
_GRAFX_R = 1.0 / (1.0 + (1.0 / COMP["ratio"] - 1.0) / 2.0)
_GRAFX_W = COMP["knee_db"] * _LN10_10


def _grafx_comp():
    module = _import_grafx().Compressor(
        energy_smoother="ballistics", gain_smoother=None, knee="quadratic", flashfftconv=False
    )
    # Energy rising (attack) takes compressor_core's second ("rt") coefficient slot.
    z_pre = torch.logit(torch.tensor([_ms2coef(COMP["release_ms"]), _ms2coef(COMP["attack_ms"])],
                                     dtype=torch.float64))  # fmt: skip

    def fn(x, p):
        B = x.shape[0]
        # Differentiable in the physical threshold/ratio/knee so the backward matches the others.
        log_threshold = (p["threshold_db"] * _LN10_10 + 6.0)[:, None]
        r_g = 1.0 / (1.0 + (1.0 / p["ratio"] - 1.0) / 2.0)
        log_ratio = torch.log(r_g - 1.0)[:, None]
        log_knee = torch.log(p["knee_db"] * _LN10_10)[:, None]
        z = z_pre.to(x.dtype).expand(B, 2)
        return module(x, log_threshold, log_ratio, log_knee, z)

    return fn


def _grafx_comp_ref(x64, p64):
    energy = (x64**2).mean(1)
    energy = _ballistics64(energy, 1.0, _ms2coef(COMP["release_ms"]), _ms2coef(COMP["attack_ms"]))
    g_u = np.log(energy + 1e-5)
    t, r, w = _GRAFX_T, _GRAFX_R, _GRAFX_W
    y = np.where(g_u > t + w / 2, t + (g_u - t) / r, g_u)
    mid = (g_u >= t - w / 2) & (g_u <= t + w / 2)
    y = np.where(mid, g_u + (1 / r - 1) * (g_u - t + w / 2) ** 2 / (2 * w), y)
    return np.exp(y - g_u)[:, None, :] * x64


COMPRESSOR = Op(
    name="compressor",
    description=(
        "feed-forward compressor, threshold -20 dB, ratio 4, attack 5 ms, release 50 ms, "
        "knee 6 dB (each library's own algorithm; checked against a float64 re-implementation "
        "of that algorithm)"
    ),
    make_params=_comp_params,
    make_input=dynamic_input,
    reference=_torchcomp_ref,  # unused: every compressor impl has its own reference
    impls={
        "diffx": Impl(
            _diffx_compressor,
            reference=_diffx_compressor_reference,
            note="dynamics.compressor() (checked against its own float64 reference)",
            is_diffx=True,
        ),
        "torchcomp": Impl(
            _torchcomp_fn,
            reference=_torchcomp_ref,
            note="compexp_gain, peak level, attack+release, hard knee",
        ),
        "grafx": Impl(
            _lazy(_grafx_comp),
            reference=_grafx_comp_ref,
            note="Compressor, energy ballistics (attack+release), quadratic knee",
        ),
        "dasp-pytorch": Impl(
            _dasp_comp_fn,
            reference=_dasp_comp_ref,
            note="functional.compressor: ignores release (attack-only FSM)",
        ),
    },  # fmt: skip
)


# --------------------------------------------------------------------------------------------
# Op 4: allpass cascade of order 16 (8 second-order sections)


def _allpass_params(batch: int, rng: np.random.Generator) -> Params:
    """Sections (c + d z^-1 + z^-2) / (1 + d z^-1 + c z^-2), c = R^2, d = -2 R cos(theta)."""
    radius = rng.uniform(0.5, 0.98, (batch, 8))
    theta = rng.uniform(0.01, math.pi - 0.01, (batch, 8))
    c, d = radius**2, -2 * radius * np.cos(theta)
    one = np.ones_like(c)
    return {"sos": torch.from_numpy(np.stack([c, d, one, one, d, c], -1))}


def _grafx_iir(backend):
    _import_grafx()
    from grafx.processors.core.iir import IIRFilter

    module = IIRFilter(order=2, **_grafx_kwargs(backend))

    def fn(x, p):
        sos = p["sos"].unsqueeze(1)  # (B, C_filter=1, K, 6)
        return module(x, sos[..., :3], sos[..., 3:])

    return fn


def _diffx_sosfilt(x, p):
    return _diffx_filters().sosfilt(x, p["sos"])


def _dasp_sos(x, p):
    from dasp_pytorch.signal import sosfilt_via_fsm

    return sosfilt_via_fsm(p["sos"], x)


ALLPASS = Op(
    name="allpass",
    description="order-16 allpass cascade: 8 second-order sections, pole radius 0.5-0.98",
    make_params=_allpass_params,
    make_input=noise_input,
    reference=lambda x64, p64: scipy_sosfilt_batch(x64, p64["sos"]),
    impls={
        "diffx": Impl(_diffx_sosfilt, note="sosfilt() on the sections", is_diffx=True),
        "torchlpc": Impl(
            lambda x, p: torchlpc_chain(x, p["sos"]), note="chain of 8 exact torchlpc biquads"
        ),
        "philtorch": Impl(
            lambda x, p: philtorch_chain(x, p["sos"]),
            note=f"8 sections: {_PHILTORCH_NOTE}",
            requires="philtorch",
        ),
        "dasp-pytorch": Impl(_dasp_sos, note="signal.sosfilt_via_fsm (FSM)"),
        "grafx-fsm": Impl(_lazy(lambda: _grafx_iir("fsm")), note="core.IIRFilter, fsm (4000 taps)"),
        "grafx-ssm": Impl(_lazy(lambda: _grafx_iir("ssm")), note="core.IIRFilter, ssm back end"),
        "scipy": Impl(
            _scipy_fn(lambda p: p["sos"]),
            differentiable=False,
            note="sosfilt float32, forward only",
        ),
    },  # fmt: skip
)

OPS = {op.name: op for op in (PEQ, COMPRESSOR, BIQUAD, ALLPASS)}

# Distribution names for the version table (import name -> distribution).
PEER_DISTRIBUTIONS = ("torchlpc", "philtorch", "torchcomp", "dasp-pytorch", "grafx", "einops",
                      "torch-geometric", "numba", "numpy", "scipy")  # fmt: skip
