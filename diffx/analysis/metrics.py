"""Aliasing metrics of Carson, Wright and Bilbao (DAFx 2025) on sine-tone test sets.

A model is driven by sine tones of known f0 (:func:`diffx.analysis.tones.chromatic_test_set`),
its onset is discarded and the steady-state output y is split by
:func:`diffx.analysis.harmonic.bandlimit` into the alias-free harmonic part bl(y) and the
aliases y - bl(y). The paper's metrics, each per tone and linear:

- Self (no reference needed), how much the model aliases:
  ``esr_s`` = sum (y - bl(y))^2 / sum bl(y)^2 (aliasing-to-signal energy ratio) and
  ``nmr_s`` = NMR(y, bl(y)), the perceptual noise-to-mask ratio of the aliases against the
  harmonic signal (BS.1387; see :mod:`diffx.losses.nmr`).
- Against a teacher T (the original model in teacher-student fine tuning), whose output is
  bandlimited first, so the target is the alias-free teacher:
  ``esr_t`` = ESR(y, bl(T)), ``nmr_t`` = NMR(y, bl(T)) and ``hesr_t`` = the harmonic ESR
  sum (|Y_bl| - |T_bl|)^2 / sum |T_bl|^2 between the Chebyshev-windowed magnitude spectra of
  bl(y) and bl(T): it ignores phase and aliases and measures only how the harmonic distortion
  changed (called "mesr" in the paper's code).
- Against a reference R (e.g. an oversampled model or the real device), defined the same way:
  ``esr_r``, ``nmr_r``, ``hesr_r``.

The paper reports each metric as 10 log10 of its mean over the tones
(:meth:`AliasingReport.means_db`); an NMR below about -10 dB is taken as inaudible.

Identities that follow from the definitions (and hold exactly here): a student identical to its
teacher has ``esr_t == esr_s``, ``nmr_t == nmr_s`` and ``hesr_t == 0``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from diffx.analysis.harmonic import (
    REFINE_ITERATIONS,
    WINDOW_ATTENUATION_DB,
    bandlimit,
    chebyshev_spectrum,
)
from diffx.analysis.tones import ToneSet, chromatic_test_set
from diffx.losses.nmr import noise_to_mask_ratio
from diffx.losses.time_domain import ESR_EPS, check_pair, esr

#: Conventional audibility threshold of the NMR (dB): noise 10 dB or more under the masked
#: threshold is taken as inaudible. Drawn as a guide line in the metric plots.
AUDIBILITY_NMR_DB = -10.0

#: Per-tone information columns of a report, in order, before the metric columns.
TONE_COLUMNS = ("f0_hz", "midi", "level_dbfs", "amplitude")
SELF_METRICS = ("esr_s", "nmr_s")
TEACHER_METRICS = ("esr_t", "nmr_t", "hesr_t")
REFERENCE_METRICS = ("esr_r", "nmr_r", "hesr_r")

#: Outputs of a model: a callable on ``(batch, 1, samples)`` audio or its precomputed outputs.
ModelLike = Callable[[torch.Tensor], torch.Tensor] | torch.Tensor


def harmonic_esr(
    pred: torch.Tensor,
    target: torch.Tensor,
    window_attenuation_db: float = WINDOW_ATTENUATION_DB,
    eps: float = ESR_EPS,
) -> torch.Tensor:
    """ESR between Chebyshev-windowed magnitude spectra (the paper's HESR, "mesr" in its code).

    Args:
        pred: ``(..., samples)``, normally a bandlimited output.
        target: the same shape, normally the bandlimited teacher or reference.
        window_attenuation_db: side-lobe attenuation of the Chebyshev window, dB.
        eps: added to the target's spectral energy so a silent target stays finite; see
            :data:`diffx.losses.time_domain.ESR_EPS`.

    Returns:
        ``(...)`` linear sum_k (|P_k| - |T_k|)^2 / (sum_k |T_k|^2 + eps) over the one-sided bins.
        Blind to phase: a delayed copy scores ~0, a copy at half the amplitude 0.25.
    """
    check_pair(pred, target)
    p = chebyshev_spectrum(pred, window_attenuation_db).abs()
    t = chebyshev_spectrum(target, window_attenuation_db).abs()
    return (p - t).square().sum(dim=-1) / (t.square().sum(dim=-1) + eps)


def self_metrics(
    output: torch.Tensor,
    f0_hz: torch.Tensor | float,
    sample_rate: float,
    refine_iterations: int = REFINE_ITERATIONS,
) -> dict[str, torch.Tensor]:
    """ESR-S and NMR-S of steady-state outputs to sine tones.

    Args:
        output: ``(batch, samples)`` or ``(batch, 1, samples)``, samples even, the analysed
            segment (onset already discarded).
        f0_hz: ``(batch,)`` or scalar fundamental of the driving tones, Hz.
        sample_rate: Hz (at least 36 kHz for the NMR's critical bands).
        refine_iterations: of the harmonic analysis; see
            :func:`diffx.analysis.harmonic.bandlimit`.

    Returns:
        ``{"esr_s": (batch,), "nmr_s": (batch,), "bandlimited": like output}``, linear.
    """
    bl, _ = bandlimit(output, f0_hz, sample_rate, refine_iterations=refine_iterations)
    y2, bl2 = output.reshape(bl.shape[0], -1), bl.reshape(bl.shape[0], -1)
    return {
        "esr_s": esr(y2, bl2),
        "nmr_s": noise_to_mask_ratio(y2, bl2, sample_rate),
        "bandlimited": bl,
    }


def comparison_metrics(
    output: torch.Tensor,
    output_bandlimited: torch.Tensor,
    target_bandlimited: torch.Tensor,
    sample_rate: float,
    suffix: str = "t",
) -> dict[str, torch.Tensor]:
    """ESR, NMR and harmonic ESR of an output against a bandlimited teacher or reference.

    Args:
        output: ``(batch, samples)`` the raw output y (aliases included).
        output_bandlimited: ``(batch, samples)`` bl(y).
        target_bandlimited: ``(batch, samples)`` bl(T) of the teacher or reference.
        sample_rate: Hz.
        suffix: ``"t"`` (teacher) or ``"r"`` (reference), appended to the keys.

    Returns:
        ``{"esr_<s>": ESR(y, bl(T)), "nmr_<s>": NMR(y, bl(T)), "hesr_<s>": HESR(bl(y), bl(T))}``,
        each ``(batch,)`` linear.
    """
    return {
        f"esr_{suffix}": esr(output, target_bandlimited),
        f"nmr_{suffix}": noise_to_mask_ratio(output, target_bandlimited, sample_rate),
        f"hesr_{suffix}": harmonic_esr(output_bandlimited, target_bandlimited),
    }


@dataclass
class AliasingReport:
    """Per-tone aliasing metrics, as returned by :func:`aliasing_metrics`.

    Attributes:
        rows: one dict per tone with the :data:`TONE_COLUMNS` and the linear metrics
            (``esr_s``, ``nmr_s``, and ``esr_t``, ``nmr_t``, ``hesr_t`` / ``esr_r``, ``nmr_r``,
            ``hesr_r`` when a teacher / reference was given).
        sample_rate: Hz.
        metrics: names of the metric columns present.
    """

    rows: list[dict[str, float]]
    sample_rate: float
    metrics: tuple[str, ...] = field(default=SELF_METRICS)

    def __len__(self) -> int:
        return len(self.rows)

    def to_rows(self) -> list[dict[str, float]]:
        """A copy of the per-tone rows."""
        return [dict(row) for row in self.rows]

    def column(self, name: str) -> np.ndarray:
        """One column over the tones, e.g. ``report.column("nmr_s")`` (linear)."""
        if not self.rows or name not in self.rows[0]:
            known = tuple(self.rows[0]) if self.rows else ()
            raise KeyError(f"no column {name!r} in the report; columns are {known}")
        return np.array([row[name] for row in self.rows], dtype=np.float64)

    def levels_dbfs(self) -> list[float]:
        """The distinct tone levels, ascending."""
        return sorted({round(row["level_dbfs"], 9) for row in self.rows})

    def means_db(self, level_dbfs: float | None = None) -> dict[str, float]:
        """10 log10 of the mean of each linear metric over the tones, as the paper reports.

        Args:
            level_dbfs: restrict to the tones at this level (within 1e-6 dB), or all tones.

        Returns:
            ``{metric: dB}`` for every metric in :attr:`metrics`.
        """
        rows = self.rows
        if level_dbfs is not None:
            rows = [r for r in rows if abs(r["level_dbfs"] - level_dbfs) < 1e-6]
            if not rows:
                raise ValueError(f"no tones at level_dbfs={level_dbfs}; have {self.levels_dbfs()}")
        out = {}
        for name in self.metrics:
            mean = float(np.mean([r[name] for r in rows]))
            out[name] = 10.0 * math.log10(mean) if mean > 0 else -math.inf
        return out

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the per-tone rows (linear metrics) as CSV with a header line."""
        if not self.rows:
            raise ValueError("the report has no rows to write")
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)


def _model_name(model) -> str:
    return getattr(model, "__name__", None) or type(model).__name__


def _placement(model) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of a module's first parameter (or buffer); else CPU float64."""
    if isinstance(model, nn.Module):
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                return t.device, t.dtype
    return torch.device("cpu"), torch.float64


class _Outputs:
    """Batched steady-state outputs of a model (run on the fly) or of precomputed tensors."""

    def __init__(self, source: ModelLike, name: str, tones: ToneSet):
        self.source, self.name, self.tones = source, name, tones
        analysed = tones.analysed_samples
        if isinstance(source, torch.Tensor):
            expected = (len(tones), 1)
            if (
                source.dim() != 3
                or tuple(source.shape[:2]) != expected
                or source.shape[-1]
                not in (
                    tones.audio.shape[-1],
                    analysed,
                )
            ):
                raise ValueError(
                    f"{name} outputs must be shaped ({len(tones)}, 1, {tones.audio.shape[-1]}) "
                    f"(whole tones) or ({len(tones)}, 1, {analysed}) (analysed part), got "
                    f"{tuple(source.shape)}"
                )
            if not source.is_floating_point():
                raise ValueError(f"{name} outputs must be floating point, got {source.dtype}")
        elif not callable(source):
            raise ValueError(
                f"{name} must be a callable model or a tensor of its outputs, got "
                f"{type(source).__name__}"
            )
        else:
            self.device, self.dtype = _placement(source)

    def __call__(self, start: int, stop: int) -> torch.Tensor:
        """``(stop - start, analysed)`` float64 CPU outputs for tones ``start:stop``."""
        discard = self.tones.discard_samples
        if isinstance(self.source, torch.Tensor):
            y = self.source[start:stop].detach()
            if y.shape[-1] == self.tones.audio.shape[-1]:
                y = y[..., discard:]
        else:
            x = self.tones.audio[start:stop].to(device=self.device, dtype=self.dtype)
            y = self.source(x)
            if not isinstance(y, torch.Tensor):
                raise ValueError(
                    f"{self.name} ({_model_name(self.source)}) must return a tensor, got "
                    f"{type(y).__name__}"
                )
            if y.shape != x.shape:
                raise ValueError(
                    f"{self.name} ({_model_name(self.source)}) must map (batch, 1, samples) "
                    f"audio to the same shape: input {tuple(x.shape)}, output {tuple(y.shape)}"
                )
            y = y[..., discard:]
        y = y.detach().to(device="cpu", dtype=torch.float64)[:, 0, :]
        bad = ~torch.isfinite(y)
        if bool(bad.any()):
            tone = start + int(bad.any(dim=-1).nonzero()[0])
            raise ValueError(
                f"{self.name} ({_model_name(self.source)}) output has {int(bad.sum())} NaN/Inf "
                f"values (first at tone {tone}, f0 {float(self.tones.f0_hz[tone]):.6g} Hz)"
            )
        return y


def aliasing_metrics(
    model: ModelLike,
    sample_rate: float,
    tones: ToneSet | None = None,
    teacher: ModelLike | None = None,
    reference: ModelLike | None = None,
    batch_size: int = 32,
    progress: bool = True,
    refine_iterations: int = REFINE_ITERATIONS,
) -> AliasingReport:
    """Measure a model's aliasing (and its distance to a teacher / reference) on sine tones.

    Args:
        model: a callable mapping ``(batch, 1, samples)`` audio to the same shape (an
            ``nn.Module`` runs on its parameters' device and dtype, in eval mode, without
            gradients; other callables get float64 CPU audio), or a tensor of its precomputed
            outputs shaped ``(tones, 1, samples)`` for the whole tones or
            ``(tones, 1, samples - discard)`` for the analysed part.
        sample_rate: Hz; must equal ``tones.sample_rate`` and be at least 36 kHz (the NMR's
            critical bands reach 18 kHz).
        tones: the drive signals (default: :func:`~diffx.analysis.tones.chromatic_test_set`,
            264 tones).
        teacher: optional model or outputs, as ``model``, for ESR-T, NMR-T and HESR-T.
        reference: optional model or outputs, as ``model`` (e.g. an oversampled model or
            recordings of the device), for ESR-R, NMR-R and HESR-R.
        batch_size: tones per model call.
        progress: show a tqdm progress bar over batches.
        refine_iterations: of the harmonic analysis (0 = the paper's one-shot estimate).

    Returns:
        An :class:`AliasingReport` with one row per tone.
    """
    if tones is None:
        tones = chromatic_test_set(sample_rate)
    if not isinstance(tones, ToneSet):
        raise ValueError(f"tones must be a ToneSet, got {type(tones).__name__}")
    if float(sample_rate) != tones.sample_rate:
        raise ValueError(
            f"sample_rate = {sample_rate} differs from tones.sample_rate = {tones.sample_rate}"
        )
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    sources = {"model": _Outputs(model, "model", tones)}
    if teacher is not None:
        sources["teacher"] = _Outputs(teacher, "teacher", tones)
    if reference is not None:
        sources["reference"] = _Outputs(reference, "reference", tones)
    metric_names = SELF_METRICS
    metric_names += TEACHER_METRICS if teacher is not None else ()
    metric_names += REFERENCE_METRICS if reference is not None else ()

    modules = [s for s in (model, teacher, reference) if isinstance(s, nn.Module)]
    was_training = [m.training for m in modules]
    rows: list[dict[str, float]] = []
    starts = range(0, len(tones), int(batch_size))
    try:
        for m in modules:
            m.eval()
        with torch.no_grad():
            for start in tqdm(starts, desc="aliasing metrics", unit="batch", disable=not progress):
                stop = min(start + int(batch_size), len(tones))
                rows += _batch_rows(sources, tones, start, stop, refine_iterations)
    finally:
        for m, training in zip(modules, was_training):
            m.train(training)
    return AliasingReport(rows=rows, sample_rate=tones.sample_rate, metrics=metric_names)


def _batch_rows(sources, tones: ToneSet, start: int, stop: int, refine_iterations: int):
    f0 = tones.f0_hz[start:stop]
    fs = tones.sample_rate
    y = sources["model"](start, stop)
    values = self_metrics(y, f0, fs, refine_iterations)
    y_bl = values.pop("bandlimited")
    for key, suffix in (("teacher", "t"), ("reference", "r")):
        if key in sources:
            target_bl, _ = bandlimit(
                sources[key](start, stop), f0, fs, refine_iterations=refine_iterations
            )
            values.update(comparison_metrics(y, y_bl, target_bl, fs, suffix))
    rows = []
    for i, tone in enumerate(range(start, stop)):
        row = {name: float(getattr(tones, name)[tone]) for name in TONE_COLUMNS}
        row.update({name: float(v[i]) for name, v in values.items()})
        rows.append(row)
    return rows


__all__ = [
    "AUDIBILITY_NMR_DB",
    "AliasingReport",
    "aliasing_metrics",
    "comparison_metrics",
    "harmonic_esr",
    "self_metrics",
]
