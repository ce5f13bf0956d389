"""Frame-rate control features of DDSP (Engel et al., ICLR 2020): f0, its confidence and loudness.

Frame ``t`` is centred on sample ``t * hop`` with ``hop = sample_rate / frame_rate_hz`` samples,
and a clip of ``n`` samples has ``ceil(n / hop)`` frames, for both features, so they line up
with each other and with the synthesizer's controls (DDSP's default frame rate is 250 Hz: a hop
of 64 samples at 16 kHz).

* :func:`a_weighted_loudness_db`: A-weighted mean power per frame in dB, differentiable.
* :func:`crepe_pitch`: f0 in Hz and CREPE's confidence (Kim et al., ICASSP 2018) through the
  ``torchcrepe`` package, whose weights ship inside the package (nothing is downloaded).
"""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import torch

from diffx._validation import check_finite, wide_dtype
from diffx.functional.resampling import resample
from diffx.losses.filters import a_weighting_db

DEFAULT_FRAME_RATE_HZ = 250
"""DDSP's control rate: one frame every 4 ms."""

LOUDNESS_N_FFT = 2048
"""FFT size of the loudness analysis at 16 kHz (DDSP's): 128 ms, long enough that the
A-weighting is resolved down to its steep low end (8 Hz bins)."""

LOUDNESS_FLOOR_DB = -120.0
"""Loudness of silence. The power is floored at ``10 ** (LOUDNESS_FLOOR_DB / 10)`` before the
log, so silence is finite and its gradient is zero instead of NaN."""

CREPE_SAMPLE_RATE = 16000
"""CREPE's networks take 1024-sample frames at 16 kHz."""

CREPE_FMIN_HZ = 31.7
"""Lowest f0 CREPE's 360 bins (20 cents apart) cover: 1997.38 cents above 10 Hz."""

CREPE_FMAX_HZ = 2006.0
"""Highest f0 CREPE's bins cover (torchcrepe's ``MAX_FMAX``)."""

CREPE_CENTS_PER_BIN = 20.0
CREPE_FIRST_BIN_CENTS = 1997.3794084376191
"""CREPE's 360 output bins: bin ``i`` is ``CREPE_FIRST_BIN_CENTS + 20 i`` cents above 10 Hz."""

CREPE_LOCAL_AVERAGE_BINS = 4
"""f0 is the activation-weighted mean of the bins within this many of the decoded bin (CREPE's
local average), which resolves pitch well below the 20-cent bin spacing."""

CREPE_MODELS = ("full", "tiny")
"""CREPE capacities torchcrepe ships: ``full`` (22M weights, the paper's) and ``tiny`` (about
13x faster on a CPU, slightly less accurate)."""


def frame_hop(sample_rate: int, frame_rate_hz: int) -> int:
    """Samples per frame, ``sample_rate / frame_rate_hz``, which must be a whole number.

    Raises:
        ValueError: either rate is not a positive integer, or they do not divide.
    """
    for value, name in ((sample_rate, "sample_rate"), (frame_rate_hz, "frame_rate_hz")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive integer (Hz), got {value!r}")
    if sample_rate % frame_rate_hz:
        raise ValueError(
            f"sample_rate ({sample_rate} Hz) must be a multiple of frame_rate_hz "
            f"({frame_rate_hz} Hz) so that frames start on whole samples"
        )
    return sample_rate // frame_rate_hz


def n_frames(n_samples: int, hop: int) -> int:
    """Frames of a clip of ``n_samples``: ``ceil(n_samples / hop)``."""
    return -(-int(n_samples) // int(hop))


def a_weighted_loudness_db(
    audio: torch.Tensor,
    sample_rate: int,
    frame_rate_hz: int = DEFAULT_FRAME_RATE_HZ,
    n_fft: int | None = None,
) -> torch.Tensor:
    """A-weighted loudness per frame in dB, as DDSP's loudness feature.

    Each frame is Hann-windowed (``n_fft`` samples, zero-padded at the ends of the clip), its
    power spectrum is weighted by the IEC 61672 A-curve in power (not in dB: averaging dB
    values would be a geometric mean that a single empty bin drags to the floor) and summed,
    then normalized by the window's energy. The scale is absolute: white noise of variance
    ``s**2`` reads ``10 log10(s**2)`` before weighting, and a sine of amplitude ``a`` at 1 kHz
    (where the A-curve is 0 dB) reads ``20 log10(a / sqrt(2))``, -3.01 dB at full scale. DDSP's
    ``compute_loudness`` measures the same A-weighted mean power with an unnormalized FFT, so
    the two differ by a constant that depends only on the FFT size.

    Args:
        audio: ``(..., samples)`` float audio.
        sample_rate: Hz, a multiple of ``frame_rate_hz``.
        frame_rate_hz: frames per second.
        n_fft: analysis length in samples; default :data:`LOUDNESS_N_FFT` scaled to
            ``sample_rate`` (2048 at 16 kHz), rounded up to a power of two.

    Returns:
        ``(..., frames)`` loudness in dB, ``frames = ceil(samples / hop)``, floored at
        :data:`LOUDNESS_FLOOR_DB`.

    Raises:
        ValueError: the audio holds NaN or Inf, has no samples, or the rates do not divide.
    """
    hop = frame_hop(sample_rate, frame_rate_hz)
    if not isinstance(audio, torch.Tensor) or audio.dim() < 1 or audio.shape[-1] < 1:
        raise ValueError("audio must be a tensor shaped (..., samples) with at least one sample")
    check_finite(audio.detach(), "audio")
    if n_fft is None:
        n_fft = 2 ** math.ceil(math.log2(LOUDNESS_N_FFT * sample_rate / CREPE_SAMPLE_RATE))
    n_fft = int(n_fft)
    if n_fft < 2 or n_fft % 2:
        raise ValueError(f"n_fft must be an even number >= 2, got {n_fft}")
    lead, n = audio.shape[:-1], audio.shape[-1]
    if not audio.is_floating_point():
        audio = audio.float()
    flat = audio.reshape(-1, n)
    window = torch.hann_window(n_fft, periodic=True, dtype=flat.dtype, device=flat.device)
    spec = torch.stft(
        flat, n_fft, hop_length=hop, window=window, center=True, pad_mode="constant",
        return_complex=True,
    )  # (batch, bins, 1 + n // hop)
    power = spec.real**2 + spec.imag**2
    freqs_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    weight = 10.0 ** (a_weighting_db(freqs_hz) / 10.0)
    # Parseval over the full (two-sided) spectrum: every bin but DC and Nyquist counts twice.
    weight[1 : n_fft // 2] *= 2.0
    weight = torch.as_tensor(weight / (n_fft * float((window**2).sum())), dtype=flat.dtype)
    mean_power = torch.einsum("bkt,k->bt", power, weight.to(flat.device))
    floor = 10.0 ** (LOUDNESS_FLOOR_DB / 10.0)
    loudness = 10.0 * torch.log10(mean_power.clamp_min(floor))
    return loudness[:, : n_frames(n, hop)].reshape(*lead, -1)


class _TorchaudioStandIn(types.ModuleType):
    """Stands in for a ``torchaudio`` whose compiled extension does not load.

    torchcrepe imports torchaudio only to read audio files (``torchcrepe.load.audio``), which
    diffx never calls: diffx reads files with soundfile. PyPI's torchaudio wheels trail torch's
    releases and, built against another torch, fail at import; this stand-in lets torchcrepe's
    networks and decoders load anyway, and says why if its file reader is ever called.
    """

    def __init__(self, reason: str) -> None:
        super().__init__("torchaudio")
        self._reason = reason

    def load(self, *args, **kwargs):
        raise RuntimeError(
            f"torchaudio is not usable here ({self._reason}); read audio with "
            "diffx.io.load_audio instead"
        )


def import_torchcrepe():
    """Import ``torchcrepe``, with a clear error when it is not installed.

    Raises:
        ImportError: torchcrepe (or one of its own dependencies) is missing; the message
            names the package and how to install it.
    """
    if sys.modules.get("torchcrepe") is not None:
        return sys.modules["torchcrepe"]
    try:
        import torchaudio  # noqa: F401
    except ModuleNotFoundError:
        pass  # torchcrepe's own import will name it, below
    except (OSError, ImportError, RuntimeError) as err:
        for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
            del sys.modules[name]
        sys.modules["torchaudio"] = _TorchaudioStandIn(f"{type(err).__name__}: {err}")
    try:
        import torchcrepe
    except ModuleNotFoundError as err:
        missing = err.name or "torchcrepe"
        raise ImportError(
            f"f0 estimation needs the package {missing!r}, which is not installed: "
            "pip install 'diffx[timbre]' (or pip install torchcrepe)"
        ) from err
    return torchcrepe


def crepe_pitch(
    audio: torch.Tensor,
    sample_rate: int,
    frame_rate_hz: int = DEFAULT_FRAME_RATE_HZ,
    model: str = "full",
    fmin_hz: float = CREPE_FMIN_HZ,
    fmax_hz: float = CREPE_FMAX_HZ,
    decoder: str = "viterbi",
    batch_frames: int = 1024,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """f0 and confidence per frame with CREPE (torchcrepe's port of its weights).

    The audio is resampled to 16 kHz (``scipy.signal.resample_poly``, float64) when it is not
    at 16 kHz already, and framed with ``hop = 16000 / frame_rate_hz`` samples there, so frame
    ``t`` is centred on second ``t / frame_rate_hz`` as in :func:`a_weighted_loudness_db`.
    Confidence is the network's largest bin activation ("periodicity" in torchcrepe), in
    [0, 1]: near 1 on clean notes, low on silence, noise and unvoiced speech.

    Args:
        audio: ``(samples,)`` or ``(batch, samples)`` (or ``(batch, 1, samples)``) audio.
        sample_rate: Hz of ``audio``, a multiple of ``frame_rate_hz``.
        frame_rate_hz: frames per second; 16000 must be a multiple of it.
        model: ``"full"`` or ``"tiny"`` (:data:`CREPE_MODELS`).
        fmin_hz, fmax_hz: the decoder's search range in Hz.
        decoder: ``"viterbi"`` (smooth tracks, CREPE's default) or ``"argmax"``.
        batch_frames: frames per network call (memory vs speed).
        device: where to run the network (default: the audio's device).

    Returns:
        ``(f0_hz, confidence)``, each shaped like ``audio`` with samples replaced by
        ``frames = ceil(samples / hop)`` (float32, on the audio's device).

    Raises:
        ImportError: torchcrepe is not installed (named in the message).
        ValueError: bad audio (NaN, Inf, empty) or settings; the message names the culprit.
    """
    hop = frame_hop(sample_rate, frame_rate_hz)
    crepe_hop = frame_hop(CREPE_SAMPLE_RATE, frame_rate_hz)
    if model not in CREPE_MODELS:
        raise ValueError(f"model must be one of {CREPE_MODELS}, got {model!r}")
    if not 0 < fmin_hz < fmax_hz:
        raise ValueError(f"need 0 < fmin_hz < fmax_hz, got {fmin_hz} and {fmax_hz}")
    if not isinstance(audio, torch.Tensor) or audio.dim() not in (1, 2, 3) or audio.shape[-1] < 1:
        raise ValueError("audio must be a tensor shaped (samples,), (batch, samples) or "
                         "(batch, 1, samples)")
    if audio.dim() == 3 and audio.shape[1] != 1:
        raise ValueError(f"audio must be mono, got {audio.shape[1]} channels")
    check_finite(audio.detach(), "audio")
    if decoder not in CREPE_DECODERS:
        raise ValueError(f"decoder must be one of {CREPE_DECODERS}, got {decoder!r}")
    torchcrepe = import_torchcrepe()

    def decode(activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # torchcrepe hands over the network's sigmoid activations (batch, 360, frames), set
        # to -inf outside fmin..fmax; it reads the confidence off them at the returned bins.
        if decoder == "viterbi":
            bins = _viterbi_bins(activations)
        else:
            bins = activations.argmax(dim=1)
        return bins, _local_average_hz(activations, bins)

    shape, n = audio.shape[:-1], audio.shape[-1]
    frames = n_frames(n, hop)
    rows = audio.detach().reshape(-1, n).to("cpu", torch.float64).numpy()
    if sample_rate != CREPE_SAMPLE_RATE:
        rows = resample(rows, sample_rate, CREPE_SAMPLE_RATE)
    run_on = torch.device(device) if device is not None else audio.device
    f0s, confs = [], []
    for row in rows:
        with torch.no_grad():
            f0, conf = torchcrepe.predict(
                torch.from_numpy(row.astype(np.float32))[None],
                CREPE_SAMPLE_RATE,
                crepe_hop,
                fmin_hz,
                fmax_hz,
                model,
                decoder=decode,
                return_periodicity=True,
                batch_size=batch_frames,
                device=run_on,
                pad=True,
            )
        # torchcrepe gives 1 + samples // hop centred frames; resampling can shorten the clip
        # by a sample, so pad with the last frame before cutting to the common frame count.
        f0, conf = f0[0], conf[0]
        if f0.shape[0] < frames:
            extra = frames - f0.shape[0]
            f0 = torch.cat([f0, f0[-1:].expand(extra)])
            conf = torch.cat([conf, conf[-1:].expand(extra)])
        f0s.append(f0[:frames])
        confs.append(conf[:frames])
    f0_hz = torch.stack(f0s).reshape(*shape, frames).to(audio.device, torch.float32)
    confidence = torch.stack(confs).reshape(*shape, frames).to(audio.device, torch.float32)
    return f0_hz, confidence.clamp(0.0, 1.0)


CREPE_DECODERS = ("viterbi", "argmax")
"""How the bin of each frame is chosen: the Viterbi path through the activations (smooth
tracks, CREPE's option for continuous pitch) or each frame's largest activation."""


CREPE_VITERBI_REACH_BINS = 12
"""The Viterbi path moves at most 11 bins (220 cents) per frame, with a probability falling
linearly with the jump (CREPE's transition model)."""


def _viterbi_bins(activations: torch.Tensor) -> torch.Tensor:
    """Most likely bin path through ``activations (batch, 360, frames)``.

    The emission probabilities are each frame's activations normalized to sum to 1 (CREPE's
    decoding). torchcrepe's own Viterbi decoder takes a softmax of the activations instead,
    which, since they lie in [0, 1], is nearly flat: on speech its path slides to the edge of
    the pitch range (measured here on the shipped voice clip: 32 Hz instead of about 110 Hz).
    """
    import librosa  # a dependency of torchcrepe, so present whenever CREPE is

    n_bins = activations.shape[1]
    jump = np.abs(np.subtract.outer(np.arange(n_bins), np.arange(n_bins)))
    transition = np.maximum(CREPE_VITERBI_REACH_BINS - jump, 0).astype(np.float64)
    transition /= transition.sum(axis=1, keepdims=True)
    probs = torch.nan_to_num(activations.detach().cpu().double(), neginf=0.0).clamp_min(0.0)
    # A small floor keeps an all-silent frame from zeroing every path.
    probs = probs + 1e-12
    probs = (probs / probs.sum(dim=1, keepdim=True)).numpy()
    paths = [librosa.sequence.viterbi(p, transition) for p in probs]
    return torch.as_tensor(np.stack(paths), device=activations.device)


def _local_average_hz(activations: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """f0 in Hz from CREPE's ``activations (batch, 360, frames)`` around ``bins``.

    torchcrepe's own decoders add random dither to the bin centres (non-deterministic output
    with 20-cent steps); this is CREPE's deterministic local average instead.
    """
    n_bins = activations.shape[1]
    offsets = torch.arange(
        -CREPE_LOCAL_AVERAGE_BINS, CREPE_LOCAL_AVERAGE_BINS + 1, device=activations.device
    )
    index = bins.long()[:, None, :] + offsets[None, :, None]  # (batch, 9, frames)
    inside = (index >= 0) & (index < n_bins)
    index = index.clamp(0, n_bins - 1)
    wide = wide_dtype(activations.device, "CREPE's f0 decoding")
    probs = torch.nan_to_num(activations.to(wide), neginf=0.0).clamp_min(0.0)
    weights = probs.gather(1, index) * inside
    bin_cents = CREPE_FIRST_BIN_CENTS + CREPE_CENTS_PER_BIN * index.to(wide)
    total = weights.sum(dim=1)
    centre = CREPE_FIRST_BIN_CENTS + CREPE_CENTS_PER_BIN * bins.to(wide)
    # A frame whose window holds no activation at all (outside fmin..fmax) keeps its bin.
    cents_value = torch.where(
        total > 0, (weights * bin_cents).sum(dim=1) / total.clamp_min(1e-30), centre
    )
    return (10.0 * 2.0 ** (cents_value / 1200.0)).float()


def cents(f_hz: torch.Tensor, reference_hz: torch.Tensor) -> torch.Tensor:
    """Pitch difference ``1200 log2(f / reference)`` in cents (both must be > 0)."""
    return 1200.0 * torch.log2(f_hz / reference_hz)


NOTE_CONFIDENCE_THRESHOLD = 0.6
"""A frame is part of a note when its smoothed CREPE confidence reaches this. Sustained
instrument notes and voiced speech read 0.8-0.95 (tiny and full CREPE); silence, breath and
unvoiced consonants stay well below."""

NOTE_SMOOTHING_FRAMES = 10
"""Confidence is averaged over this many frames (40 ms at 250 Hz) before the threshold, so a
note is not chopped by a single uncertain frame."""

NOTE_MIN_LOUDNESS_DB = -70.0
"""Frames quieter than this (A-weighted, dB re full-scale noise) are never notes: CREPE can be
confident about the pitch of a near-silent hum."""

QUIET_DB = 20.0
"""How far :func:`adjust_loudness` turns down frames that are not notes (as the DDSP demo)."""

LOUDNESS_QUANTILES = 101
"""Quantiles (0, 1, ..., 100 %) that summarize a loudness distribution for the mapping."""


def _moving_average(values: np.ndarray, frames: int) -> np.ndarray:
    if frames <= 1 or values.shape[-1] == 0:
        return values
    kernel = np.ones(frames) / frames
    padded = np.pad(values, (frames // 2, frames - 1 - frames // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def detect_notes(
    loudness_db: np.ndarray | torch.Tensor,
    confidence: np.ndarray | torch.Tensor,
    confidence_threshold: float = NOTE_CONFIDENCE_THRESHOLD,
    smoothing_frames: int = NOTE_SMOOTHING_FRAMES,
    min_loudness_db: float = NOTE_MIN_LOUDNESS_DB,
) -> tuple[np.ndarray, np.ndarray]:
    """Which frames of one clip hold a pitched note.

    Args:
        loudness_db: ``(frames,)`` from :func:`a_weighted_loudness_db`.
        confidence: ``(frames,)`` from :func:`crepe_pitch`.

    Returns:
        ``(mask, strength)``: ``mask (frames,)`` bool, True on notes; ``strength (frames,)`` in
        [0, 1], the smoothed confidence over the threshold (1 on every note frame), which
        :func:`adjust_loudness` uses to turn down the gaps gradually rather than by a step.
    """
    loudness = np.asarray(loudness_db, dtype=np.float64).reshape(-1)
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    if loudness.shape != conf.shape:
        raise ValueError(
            f"loudness_db and confidence must have the same frames, got {loudness.shape} "
            f"and {conf.shape}"
        )
    if not 0 < confidence_threshold <= 1:
        raise ValueError(f"confidence_threshold must be in (0, 1], got {confidence_threshold}")
    smooth = _moving_average(conf, int(smoothing_frames))
    strength = np.clip(smooth / confidence_threshold, 0.0, 1.0)
    mask = (smooth >= confidence_threshold) & (loudness > min_loudness_db)
    return mask, np.where(mask, 1.0, strength)


def loudness_quantiles(loudness_db: np.ndarray, n: int = LOUDNESS_QUANTILES) -> np.ndarray:
    """``n`` evenly spaced quantiles (0 to 100 %) of loudness values in dB, ``(n,)``.

    Raises:
        ValueError: no values (e.g. no note was detected anywhere).
    """
    values = np.asarray(loudness_db, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("no loudness values to take quantiles of (no notes detected?)")
    return np.quantile(values, np.linspace(0.0, 1.0, int(n)))


def map_quantiles(values: np.ndarray, source_q: np.ndarray, target_q: np.ndarray) -> np.ndarray:
    """Map ``values`` so that the distribution ``source_q`` lands on ``target_q``.

    A monotone piecewise-linear map through the matching quantile pairs (quantile mapping);
    beyond either end it continues with the offset of that end, so nothing is clipped.
    Repeated source quantiles (a flat stretch of the distribution) are merged.
    """
    values = np.asarray(values, dtype=np.float64)
    source_q = np.asarray(source_q, dtype=np.float64)
    target_q = np.asarray(target_q, dtype=np.float64)
    if source_q.shape != target_q.shape or source_q.ndim != 1 or source_q.size < 1:
        raise ValueError("source_q and target_q must be 1-D arrays of the same length")
    keep = np.concatenate([[True], np.diff(source_q) > 0])
    xs, ys = source_q[keep], target_q[keep]
    mapped = np.interp(values, xs, ys)
    mapped = np.where(values < xs[0], values + (ys[0] - xs[0]), mapped)
    return np.where(values > xs[-1], values + (ys[-1] - xs[-1]), mapped)


def adjust_loudness(
    loudness_db: np.ndarray,
    confidence: np.ndarray,
    target_quantiles_db: np.ndarray,
    quiet_db: float = QUIET_DB,
    **note_options,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit an input's loudness to what a model was trained on (the DDSP demo's adjustment).

    The loudness of the input's note frames is quantile-mapped onto ``target_quantiles_db``
    (the training data's note loudness, :func:`loudness_quantiles`), the same map is applied
    to every frame, and frames without a note are turned down by up to ``quiet_db`` (by
    ``quiet_db * (1 - strength)``), so that breaths, consonants and noise do not drive the
    instrument. Without any note frame the loudness is only turned down.

    Args:
        loudness_db, confidence: ``(frames,)`` features of the input.
        target_quantiles_db: ``(LOUDNESS_QUANTILES,)`` quantiles of the training loudness.
        quiet_db: dB taken off frames that hold no note.
        note_options: passed to :func:`detect_notes`.

    Returns:
        ``(adjusted_db, mask)``: the new loudness ``(frames,)`` and the note mask.
    """
    loudness = np.asarray(loudness_db, dtype=np.float64).reshape(-1)
    mask, strength = detect_notes(loudness, confidence, **note_options)
    target = np.asarray(target_quantiles_db, dtype=np.float64)
    if mask.any():
        source = loudness_quantiles(loudness[mask], target.size)
        loudness = map_quantiles(loudness, source, target)
    adjusted = loudness - float(quiet_db) * (1.0 - strength)
    return np.maximum(adjusted, LOUDNESS_FLOOR_DB), mask


def resynthesis_errors(
    audio: torch.Tensor,
    sample_rate: int,
    frame_rate_hz: int,
    f0_hz: torch.Tensor,
    confidence: torch.Tensor,
    loudness_db: torch.Tensor,
    crepe_model: str | None = "full",
) -> dict[str, float]:
    """How well ``audio`` follows the f0 and loudness it was made from, as sums over frames.

    Frames count where the reference holds a note (:func:`detect_notes` on ``loudness_db``
    and ``confidence``). The f0 of ``audio`` is measured with the same CREPE ``crepe_model``
    (``None`` skips it).

    Args:
        audio: ``(batch, 1, samples)``, ``samples = frames * hop``.
        f0_hz, confidence, loudness_db: ``(batch, frames)`` reference features.

    Returns:
        ``note_frames``, ``loudness_abs_error_db_sum`` and, with ``crepe_model``,
        ``voiced_frames`` (equal to ``note_frames``), ``f0_abs_error_cents_sum`` and
        ``f0_within_50_cents`` (a count).
    """
    if audio.dim() != 3 or audio.shape[1] != 1:
        raise ValueError(f"audio must be (batch, 1, samples), got {tuple(audio.shape)}")
    mono = audio[:, 0].detach().float()
    measured_db = a_weighted_loudness_db(mono, sample_rate, frame_rate_hz).cpu().numpy()
    if measured_db.shape != tuple(loudness_db.shape):
        raise ValueError(
            f"audio gives {measured_db.shape[-1]} frames but the features have "
            f"{loudness_db.shape[-1]}"
        )
    masks = np.stack(
        [detect_notes(ld, c)[0] for ld, c in zip(loudness_db.cpu().numpy(),
                                                 confidence.cpu().numpy())]
    )
    reference_db = loudness_db.detach().cpu().numpy()
    sums = {
        "note_frames": float(masks.sum()),
        "loudness_abs_error_db_sum": float(np.abs(measured_db - reference_db)[masks].sum()),
    }
    if crepe_model is not None:
        measured_f0, _ = crepe_pitch(mono.cpu(), sample_rate, frame_rate_hz, model=crepe_model)
        error = cents(measured_f0.double(), f0_hz.detach().cpu().double().clamp_min(1e-3))
        error = error.abs().numpy()[masks]
        sums["voiced_frames"] = float(masks.sum())
        sums["f0_abs_error_cents_sum"] = float(error.sum())
        sums["f0_within_50_cents"] = float((error <= 50.0).sum())
    return sums
