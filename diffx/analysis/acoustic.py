"""Acoustic features of statistical parametric synthesis: WORLD analysis and synthesis, named
feature streams, and the measures used to judge post-filters.

**Features.** :func:`world_analysis` runs the WORLD vocoder (Morise et al., 2016, through
pyworld) and codes its output the way NNSVS and Merlin do:

- ``mgc``: mel-cepstrum of order ``mgc_order`` (``mgc_order + 1`` dims) of the CheapTrick
  spectral envelope, frequency-warped by ``alpha`` (pysptk's ``sp2mc``; SPTK's convention
  ``ln H(e^jw) = sum_m c_m e^-jwm`` on the warped axis);
- ``lf0``: natural-log f0, linearly interpolated through unvoiced frames (a continuous
  trajectory, as acoustic models predict it);
- ``vuv``: 1 on voiced frames, else 0;
- ``bap``: band aperiodicity of D4C in dB (pyworld's ``code_aperiodicity``: one band per 3 kHz
  above 3 kHz, so 1 band at 16 kHz, 5 at 48 kHz).

Each stream is a ``(frames, dims)`` float32 array, one frame every ``frame_period_ms``.
:func:`world_synthesis` turns them back into audio, so every feature can be heard.

**Measures** (all on ``(frames, dims)`` arrays, optionally restricted to a frame mask):

- global variance (GV, Toda & Tokuda 2007): per dimension, the variance of an utterance's
  trajectory; :func:`gv_ratio_db` compares predicted with natural GV, averaged over utterances;
- mel-cepstral distortion (:func:`mel_cepstral_distortion_db`), which for ``alpha = 0`` equals
  the RMS difference of the log power spectra in dB (Parseval);
- modulation spectrum (Takamichi et al., 2016): per dimension, the power spectrum of the
  trajectory over time; :func:`modulation_spectrum_distance_db` is the RMS difference in dB.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import math
import os
import sys
import types
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from diffx.functional.postfilter import StreamLayout, global_variance, masked_frames

WORLD_STREAMS = ("mgc", "lf0", "vuv", "bap")
"""The streams of :func:`world_analysis`, in the order NNSVS concatenates them."""

DEFAULT_FRAME_PERIOD_MS = 5.0
DEFAULT_MGC_ORDER = 59  # 60 dims, NNSVS's and Merlin's choice
MCD_FACTOR_DB = 10.0 / math.log(10.0) * math.sqrt(2.0)
"""``MCD = MCD_FACTOR_DB * sqrt(sum_{m>=1} (c_m - c'_m)^2)`` (Kubichek, 1993)."""

MS_SEGMENT_FRAMES = 128
"""Frames per segment of the modulation spectrum (0.64 s at 5 ms): modulation frequencies
down to 1.6 Hz, averaged over segments so that one utterance gives a stable estimate."""


# -- optional packages ------------------------------------------------------------------------


def _pkg_resources_stand_in() -> types.ModuleType:
    """A minimal ``pkg_resources`` for pyworld's ``__init__``.

    pyworld 0.3.5 reads its own version with ``pkg_resources.get_distribution``; setuptools
    81 and later no longer ship ``pkg_resources``. This stand-in answers that one call from
    ``importlib.metadata``.
    """
    module = types.ModuleType("pkg_resources")

    def get_distribution(name: str):
        return types.SimpleNamespace(version=importlib.metadata.version(name))

    module.get_distribution = get_distribution
    return module


def import_world():
    """Import ``(pyworld, pysptk)``, with a clear error when either is missing.

    Raises:
        ImportError: naming the package and the extra that installs it.
    """
    try:
        importlib.import_module("pkg_resources")
    except ImportError:
        sys.modules["pkg_resources"] = _pkg_resources_stand_in()
    modules = []
    for name in ("pyworld", "pysptk"):
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as err:
            raise ImportError(
                f"acoustic features need the package {name!r}, which is not installed: "
                "pip install 'diffx[world]' (or pip install pyworld pysptk)"
            ) from err
    return tuple(modules)


# -- streams ----------------------------------------------------------------------------------



@dataclass(frozen=True)
class WorldSettings:
    """How WORLD features were computed; :func:`world_synthesis` needs the same settings.

    Attributes:
        sample_rate: Hz.
        frame_period_ms: frame spacing.
        mgc_order: mel-cepstral order (``mgc_order + 1`` dims).
        alpha: all-pass warping constant (``None``: pysptk's ``mcepalpha`` for the rate,
            0.41 at 16 kHz, 0.55 at 48 kHz).
        f0_floor_hz, f0_ceil_hz: the f0 search range.
        f0_method: ``"harvest"`` (robust, slower) or ``"dio"`` (with StoneMask refinement).
    """

    sample_rate: int
    frame_period_ms: float = DEFAULT_FRAME_PERIOD_MS
    mgc_order: int = DEFAULT_MGC_ORDER
    alpha: float | None = None
    f0_floor_hz: float = 71.0
    f0_ceil_hz: float = 800.0
    f0_method: str = "harvest"

    def __post_init__(self) -> None:
        if int(self.sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if not 0 < self.frame_period_ms < 1000:
            raise ValueError(f"frame_period_ms must be in (0, 1000), got {self.frame_period_ms}")
        if self.mgc_order < 1:
            raise ValueError(f"mgc_order must be >= 1, got {self.mgc_order}")
        if not 0 < self.f0_floor_hz < self.f0_ceil_hz < self.sample_rate / 2:
            raise ValueError(
                f"need 0 < f0_floor_hz ({self.f0_floor_hz}) < f0_ceil_hz ({self.f0_ceil_hz}) "
                f"< Nyquist ({self.sample_rate / 2})"
            )
        if self.f0_method not in ("harvest", "dio"):
            raise ValueError(f"f0_method must be 'harvest' or 'dio', got {self.f0_method!r}")
        if self.alpha is None:
            _, pysptk = import_world()
            object.__setattr__(self, "alpha", float(pysptk.util.mcepalpha(int(self.sample_rate))))
        if not -1 < float(self.alpha) < 1:
            raise ValueError(f"alpha must be in (-1, 1), got {self.alpha}")

    @property
    def frame_rate_hz(self) -> float:
        return 1000.0 / self.frame_period_ms

    @property
    def fft_size(self) -> int:
        """CheapTrick's FFT size for the rate (WORLD's default for a 71 Hz floor)."""
        pyworld, _ = import_world()
        return int(pyworld.get_cheaptrick_fft_size(int(self.sample_rate)))

    def bap_dims(self) -> int:
        pyworld, _ = import_world()
        return int(pyworld.get_num_aperiodicities(int(self.sample_rate)))

    def layout(self) -> StreamLayout:
        return StreamLayout(WORLD_STREAMS, (self.mgc_order + 1, 1, 1, self.bap_dims()))

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike, layout: StreamLayout | None = None) -> None:
        """Write ``{"world": settings, "streams": layout}`` as JSON (``streams.json``)."""
        layout = layout or self.layout()
        Path(path).write_text(
            json.dumps({"world": self.to_dict(), "streams": layout.to_dict()}, indent=2) + "\n"
        )


def read_streams_json(path: str | os.PathLike) -> tuple[StreamLayout, WorldSettings | None]:
    """Read a ``streams.json`` (see :meth:`WorldSettings.save`): the layout, and the WORLD
    settings when the features are WORLD's (``None`` otherwise)."""
    try:
        data = json.loads(Path(path).read_text())
        layout = StreamLayout.from_dict(data["streams"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a readable streams.json ({err})") from err
    world = data.get("world")
    return layout, (WorldSettings(**world) if world else None)


def _check_audio(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of samples, got {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"{name} holds NaN or Inf samples")
    return np.ascontiguousarray(audio)


def world_analysis(audio: np.ndarray, settings: WorldSettings) -> dict[str, np.ndarray]:
    """WORLD features of one mono clip.

    Args:
        audio: ``(samples,)`` at ``settings.sample_rate``, full scale +-1.
        settings: analysis settings.

    Returns:
        ``{"mgc", "lf0", "vuv", "bap"}``, each ``(frames, dims)`` float32 with
        ``frames = samples / (sample_rate * frame_period_ms / 1000) + 1`` (WORLD's count).
        A clip without voiced frames has ``vuv = 0`` and ``lf0 = log(f0_floor_hz)``.

    Raises:
        ValueError: NaN/Inf samples or a wrong shape.
    """
    pyworld, pysptk = import_world()
    x = _check_audio(audio)
    fs, period = int(settings.sample_rate), float(settings.frame_period_ms)
    if settings.f0_method == "harvest":
        f0, times = pyworld.harvest(
            x,
            fs,
            f0_floor=settings.f0_floor_hz,
            f0_ceil=settings.f0_ceil_hz,
            frame_period=period,
        )
    else:
        f0, times = pyworld.dio(
            x,
            fs,
            f0_floor=settings.f0_floor_hz,
            f0_ceil=settings.f0_ceil_hz,
            frame_period=period,
        )
        f0 = pyworld.stonemask(x, f0, times, fs)
    fft_size = settings.fft_size
    envelope = pyworld.cheaptrick(x, f0, times, fs, fft_size=fft_size)
    aperiodicity = pyworld.d4c(x, f0, times, fs, fft_size=fft_size)
    # CheapTrick's envelope of digital silence is ~1e-16; the floor keeps log() finite.
    envelope = np.maximum(envelope, 1e-16)
    mgc = pysptk.sp2mc(envelope, settings.mgc_order, settings.alpha)
    bap = pyworld.code_aperiodicity(aperiodicity, fs)
    voiced = f0 > 0
    return {
        "mgc": mgc.astype(np.float32),
        "lf0": interpolate_log_f0(f0, settings.f0_floor_hz)[:, None].astype(np.float32),
        "vuv": voiced[:, None].astype(np.float32),
        "bap": bap.astype(np.float32),
    }


def interpolate_log_f0(f0_hz: np.ndarray, floor_hz: float) -> np.ndarray:
    """Natural-log f0 ``(frames,)``, linear in log f0 across unvoiced frames, held flat before
    the first and after the last voiced frame; ``log(floor_hz)`` when nothing is voiced."""
    f0_hz = np.asarray(f0_hz, dtype=np.float64)
    voiced = f0_hz > 0
    if not voiced.any():
        return np.full(f0_hz.shape, math.log(floor_hz))
    frames = np.arange(f0_hz.size)
    return np.interp(frames, frames[voiced], np.log(f0_hz[voiced]))


def world_synthesis(
    streams: dict[str, np.ndarray], settings: WorldSettings, vuv_threshold: float = 0.5
) -> np.ndarray:
    """Audio ``(samples,)`` float32 from ``{"mgc", "lf0", "vuv", "bap"}`` (see
    :func:`world_analysis`); f0 is ``exp(lf0)`` where ``vuv > vuv_threshold``, else 0.

    Raises:
        ValueError: a missing stream, NaN/Inf values, or streams of different lengths.
    """
    pyworld, pysptk = import_world()
    missing = [n for n in WORLD_STREAMS if n not in streams]
    if missing:
        raise ValueError(
            f"WORLD synthesis needs the streams {list(WORLD_STREAMS)}; missing {missing}"
        )
    arrays = {n: np.asarray(streams[n], dtype=np.float64) for n in WORLD_STREAMS}
    lengths = {n: a.shape[0] for n, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"streams differ in length: {lengths}")
    for name, array in arrays.items():
        if array.ndim != 2 or not np.all(np.isfinite(array)):
            raise ValueError(f"stream {name!r} must be a finite (frames, dims) array")
    fs, fft_size = int(settings.sample_rate), settings.fft_size
    f0 = np.where(arrays["vuv"][:, 0] > vuv_threshold, np.exp(arrays["lf0"][:, 0]), 0.0)
    envelope = pysptk.mc2sp(np.ascontiguousarray(arrays["mgc"]), settings.alpha, fft_size)
    aperiodicity = pyworld.decode_aperiodicity(np.ascontiguousarray(arrays["bap"]), fs, fft_size)
    audio = pyworld.synthesize(
        np.ascontiguousarray(f0), envelope, aperiodicity, fs, float(settings.frame_period_ms)
    )
    return audio.astype(np.float32)


def mgc_to_log_spectrum_db(mgc: np.ndarray, settings: WorldSettings) -> np.ndarray:
    """Power spectrum in dB ``(frames, fft_size // 2 + 1)`` of mel-cepstra ``(frames, dims)``
    (for spectrogram plots)."""
    _, pysptk = import_world()
    envelope = pysptk.mc2sp(
        np.ascontiguousarray(mgc, dtype=np.float64), settings.alpha, settings.fft_size
    )
    return 10.0 * np.log10(np.maximum(envelope, 1e-20))


# -- measures ---------------------------------------------------------------------------------



def gv_ratio_db(
    predicted: Sequence[np.ndarray],
    natural: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None = None,
) -> np.ndarray:
    """``10 log10(GV_predicted / GV_natural)`` per dimension ``(dims,)``: below 0 dB the
    prediction is over-smoothed. Both GVs are averaged over the same utterances and frames."""
    gv_pred = global_variance(predicted, masks)
    gv_nat = global_variance(natural, masks)
    return 10.0 * np.log10(np.maximum(gv_pred, 1e-30) / np.maximum(gv_nat, 1e-30))


def mel_cepstral_distortion_db(
    predicted: np.ndarray, natural: np.ndarray, mask: np.ndarray | None = None, first: int = 1
) -> float:
    """Mean over (masked) frames of the mel-cepstral distortion in dB between two
    ``(frames, dims)`` mel-cepstra, over coefficients ``first`` and up (1: without the energy
    term ``c_0``, the usual choice)."""
    pred, nat = masked_frames(predicted, mask), masked_frames(natural, mask)
    if pred.shape != nat.shape:
        raise ValueError(f"shapes differ: {pred.shape} vs {nat.shape}")
    if pred.shape[0] == 0:
        raise ValueError("mel-cepstral distortion needs at least one frame")
    diff = pred[:, first:] - nat[:, first:]
    return float(np.mean(MCD_FACTOR_DB * np.sqrt(np.sum(diff**2, axis=1))))


def modulation_spectrum_db(
    features: np.ndarray, segment_frames: int = MS_SEGMENT_FRAMES
) -> np.ndarray:
    """Modulation spectrum ``(segment_frames // 2 + 1, dims)`` in dB: per dimension, the power
    spectrum of the trajectory (mean removed per segment, Hann window), averaged over
    half-overlapping segments of ``segment_frames`` (one zero-padded segment if shorter)."""
    x = masked_frames(features, None)
    frames = x.shape[0]
    if frames < 2:
        raise ValueError("the modulation spectrum needs at least 2 frames")
    hop = max(segment_frames // 2, 1)
    starts = range(0, max(frames - segment_frames, 0) + 1, hop)
    window = np.hanning(segment_frames + 2)[1:-1][:, None]
    power = np.zeros((segment_frames // 2 + 1, x.shape[1]))
    count = 0
    for start in starts:
        segment = x[start : start + segment_frames]
        segment = segment - segment.mean(axis=0)
        padded = np.zeros((segment_frames, x.shape[1]))
        padded[: segment.shape[0]] = segment
        power += np.abs(np.fft.rfft(padded * window, axis=0)) ** 2
        count += 1
    return 10.0 * np.log10(power / count + 1e-12)


def modulation_spectrum_distance_db(
    predicted: Sequence[np.ndarray],
    natural: Sequence[np.ndarray],
    segment_frames: int = MS_SEGMENT_FRAMES,
) -> float:
    """RMS difference in dB between the modulation spectra of predicted and natural
    trajectories, over dimensions and modulation frequencies (the DC bin excluded), each
    spectrum averaged over the utterances."""
    if len(predicted) != len(natural) or not predicted:
        raise ValueError("need the same, non-zero number of predicted and natural utterances")

    def mean_power(utterances):
        powers = [10.0 ** (modulation_spectrum_db(u, segment_frames) / 10.0) for u in utterances]
        return 10.0 * np.log10(np.mean(powers, axis=0) + 1e-12)

    diff = mean_power(predicted)[1:] - mean_power(natural)[1:]
    return float(np.sqrt(np.mean(diff**2)))
