#!/usr/bin/env python3
"""Table 1 of Carson, Wright and Bilbao (DAFx 2025) for any teacher/student pair of amp models.

"Anti-aliasing of neural distortion effects via model fine tuning" (arXiv 2505.11375) compares
a trained model (the teacher), its anti-aliased fine-tuned copy (the student) and the teacher
run at 2x oversampling. This script measures the same rows and columns for any pair of models
that :func:`diffx.io.load_model` reads (NAM ``.nam`` or GuitarML / Proteus ``.json``):

Rows: ``teacher``, ``teacher_2x`` (the teacher at ``--oversampling`` times its rate),
``student`` and, with ``--student-oversampled``, ``student_2x``. Oversampling runs the model
at ``L * fs`` between an FFT upsampler and downsampler (ideal band limit;
:class:`diffx.nn.Oversampled`) after adapting it to the higher rate with
:func:`diffx.nn.oversample.adapt_to_rate`: an LSTM by the delay-line method of Carson et al.
(DAFx 2024), a WaveNet/TCN by multiplying its dilations by ``L``, as the paper does.

Columns, on the chromatic test set (every piano note, MIDI 21-108, 1.2 s, the first 0.2 s
discarded; :func:`diffx.analysis.chromatic_test_set`), each the paper's 10 log10 of the mean of
the linear per-tone metric over all tones (:func:`diffx.analysis.aliasing_metrics`):

- NMR-S, ESR-S: the row's own aliasing (noise-to-mask and energy ratio of the aliases to the
  harmonics);
- NMR-T, ESR-T, HESR-T: the row against the bandlimited teacher (HESR-T compares harmonic
  magnitudes only, so it is -inf for the teacher itself, whose ESR-T equals its ESR-S);
- with a reference device: NMR-R, ESR-R, HESR-R likewise.

And on real audio (by default the shipped guitar and bass demo clips ``guitar_em9`` and
``bass``, resampled to the model rate, processed separately and concatenated, "G+B"): the ESR
against the teacher (% and dB) and the multi-resolution STFT distance (auraloss defaults)
against the teacher, and against the reference when one is given.

Tone levels: by default the paper's evaluation levels, -36, -18 and -6 dBFS peak
(:data:`diffx.analysis.tones.TEST_LEVELS_DBFS`, section 4 of the paper as recorded in
:mod:`diffx.analysis.tones`); the paper's released code validates on the 88 tones at -20 dBFS
only (its ``config.py``), which ``--levels-dbfs -20`` reproduces.

Outputs in ``--out``: ``table.md`` and ``table.csv`` (the table), ``metrics_<row>.csv`` (the
linear metrics per tone), ``nmr_vs_f0.png`` (NMR-S against f0 for every row, one panel per
level) and ``spectrum_<f0>Hz.png`` (the spectra of every row's response to one tone, 2394.3 Hz
by default as in the paper's figure, at the loudest level), and with ``--export`` the student
saved again as ``.nam`` / ``.json``.

Usage::

    python scripts/antialias_report.py --teacher teacher.json --student student.json \\
        --out reports/broadcast_lstm
    python scripts/antialias_report.py --teacher t.nam --student s.nam --out r --tones 12 \\
        --audio-seconds 4      # quicker: 12 notes per level, 4 s of each clip

The importable :func:`antialias_report` takes modules and accepts ``reference``: any callable
mapping ``(batch, 1, samples)`` float64 audio at the model rate to the same shape (e.g. a
circuit model of the analog device), for the -R columns.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from diffx._validation import check_sample_rate
from diffx.analysis import (
    AUDIBILITY_NMR_DB,
    AliasingReport,
    ToneSet,
    aliasing_metrics,
    bandlimit,
    chebyshev_window,
    chromatic_test_set,
    self_metrics,
)
from diffx.analysis.harmonic import REFINE_ITERATIONS, WINDOW_ATTENUATION_DB
from diffx.analysis.tones import TEST_LEVELS_DBFS
from diffx.io.audio import DEMO_SAMPLE_RATES, load_audio, load_demo
from diffx.io.guitarml import GUITARML_SAMPLE_RATE
from diffx.io.models import load_model, save_model
from diffx.losses import MultiResolutionSTFTLoss, make_pre_emphasis
from diffx.losses.time_domain import esr
from diffx.nn import Oversampled, adapt_to_rate
from diffx.nn.lstm import LSTMAmp

#: Demo clips of the real-audio comparison: the real electric guitar and the finger bass.
DEFAULT_AUDIO = ("guitar_em9", "bass")

#: The tone of the paper's spectrum figure (Hz).
SPECTRUM_F0_HZ = 2394.3

#: The oversampled rows see each test tone continued for this long and faded out (raised
#: cosine) before the FFT resampler, which treats the signal as periodic: the tone's end and
#: the model's ring-out then join the next period smoothly and any ringing of the brick-wall
#: resampler lands in the continuation, which is cropped, not in the analysed segment.
TONE_TAIL_S = 0.1

#: Silence appended to the real audio before oversampling (``Oversampled``'s ``pad_samples``),
#: for the same reason.
AUDIO_PAD_S = 0.1

TONE_COLUMNS = {
    "nmr_s": "NMR-S",
    "esr_s": "ESR-S",
    "nmr_t": "NMR-T",
    "esr_t": "ESR-T",
    "hesr_t": "HESR-T",
    "nmr_r": "NMR-R",
    "esr_r": "ESR-R",
    "hesr_r": "HESR-R",
}

ModelLike = Callable[[torch.Tensor], torch.Tensor]


def oversample_model(model: nn.Module, factor: int, pad_samples: int = 0) -> nn.Module:
    """``model`` run at ``factor`` times its rate between FFT up- and downsampling.

    Args:
        model: an audio-only ``LSTMAmp`` or ``WaveNet`` (see
            :func:`diffx.nn.oversample.adapt_to_rate`).
        factor: integer oversampling factor.
        pad_samples: silence appended at the base rate before resampling (cropped after).

    Returns:
        A module mapping ``(batch, 1, samples)`` at the model's rate to the same shape.
    """
    return Oversampled(adapt_to_rate(model, factor), factor, pad_samples)


def row_names(factor: int, student_oversampled: bool) -> list[str]:
    """The table's rows: teacher, teacher at ``factor``x, student (and student at ``factor``x)."""
    rows = ["teacher", f"teacher_{factor}x", "student"]
    return rows + ([f"student_{factor}x"] if student_oversampled else [])


def select_tones(
    sample_rate: float,
    levels_dbfs: Sequence[float] = TEST_LEVELS_DBFS,
    tones_per_level: int | None = None,
    duration_s: float = 1.2,
    discard_s: float = 0.2,
) -> ToneSet:
    """The chromatic test set, or ``tones_per_level`` notes of it evenly spread over MIDI 21-108.

    Args:
        sample_rate: Hz.
        levels_dbfs: peak levels of the tones.
        tones_per_level: ``None`` for all 88 notes; otherwise the notes nearest to
            ``tones_per_level`` evenly spaced points of 21..108 (a quicker, coarser table).
        duration_s, discard_s: tone length and discarded onset (the paper: 1.2 s and 0.2 s).

    Returns:
        The tones, ordered by level, then by note.
    """
    tones = chromatic_test_set(
        sample_rate, levels_dbfs=levels_dbfs, duration_s=duration_s, discard_s=discard_s
    )
    if tones_per_level is None:
        return tones
    if int(tones_per_level) != tones_per_level or tones_per_level < 1:
        raise ValueError(f"tones_per_level must be a positive integer, got {tones_per_level!r}")
    notes = np.unique(np.round(np.linspace(21, 108, int(tones_per_level))))
    keep = [i for i, m in enumerate(tones.midi.tolist()) if m in set(notes.tolist())]
    return tones.subset(keep)


def _extended_tones(tones: ToneSet, tail_samples: int) -> torch.Tensor:
    """``(n, 1, samples + tail)`` float64: each tone continued by ``tail`` samples faded to 0."""
    total = tones.audio.shape[-1] + tail_samples
    n = torch.arange(total, dtype=torch.float64)
    # Phase reduced to cycles in float64 before the 2 pi, as the test set renders its tones.
    cycles = torch.frac(tones.f0_hz[:, None] / tones.sample_rate * n)
    x = tones.amplitude[:, None] * torch.sin(2 * math.pi * cycles + tones.phase[:, None])
    if tail_samples:
        k = torch.arange(1, tail_samples + 1, dtype=torch.float64)
        x[:, tones.audio.shape[-1] :] *= 0.5 * (1 + torch.cos(math.pi * k / tail_samples))
    return x[:, None, :]


def _prepare(model: ModelLike, dtype: torch.dtype) -> ModelLike:
    """A frozen eval-mode copy of a module in ``dtype``; other callables unchanged."""
    if not isinstance(model, nn.Module):
        return model
    model = copy.deepcopy(model).to(dtype).eval()
    model.requires_grad_(False)
    return model


def _dtype_of(model: ModelLike) -> torch.dtype:
    if isinstance(model, nn.Module):
        for p in list(model.parameters()) + list(model.buffers()):
            if p.is_floating_point():
                return p.dtype
    return torch.float64


def _call(model: ModelLike, x: torch.Tensor) -> torch.Tensor:
    y = model(x.to(_dtype_of(model)))
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        raise ValueError(
            f"model must map {tuple(x.shape)} audio to the same shape, got "
            f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}"
        )
    return y.to(torch.float64)


@torch.no_grad()
def render_tone_outputs(
    model: ModelLike,
    tones: ToneSet,
    tail_samples: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "tones",
) -> torch.Tensor:
    """``(n, 1, samples)`` float64 responses of ``model`` to the tones (each continued by a
    faded tail of ``tail_samples`` that is cropped again; see :data:`TONE_TAIL_S`)."""
    x = _extended_tones(tones, tail_samples)
    length = tones.audio.shape[-1]
    out = []
    for start in tqdm(range(0, len(tones), batch_size), desc=desc, disable=not progress):
        out.append(_call(model, x[start : start + batch_size])[..., :length])
    return torch.cat(out)


def load_clips(
    names: Sequence[str], sample_rate: int, seconds: float | None = None, gain_db: float = 0.0
) -> list[torch.Tensor]:
    """Demo clips (by name) or audio files (by path), mono at ``sample_rate``, ``(1, samples)``.

    Args:
        names: keys of :data:`diffx.io.audio.DEMO_SAMPLE_RATES` or audio file paths.
        sample_rate: Hz (an integer rate; the resampler is polyphase with the exact ratio).
        seconds: keep only the first ``seconds`` of each clip (``None``: all of it).
        gain_db: gain applied to every clip.
    """
    clips = []
    for name in names:
        if name in DEMO_SAMPLE_RATES:
            audio, _ = load_demo(name, sample_rate=sample_rate)
        else:
            audio, _ = load_audio(name, sample_rate=sample_rate, mono=True)
        if seconds is not None:
            audio = audio[..., : max(1, round(seconds * sample_rate))]
        clips.append(audio.to(torch.float64) * 10 ** (gain_db / 20))
    return clips


@torch.no_grad()
def render_audio(model: ModelLike, clips: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(1, 1, total)`` float64: each clip processed from silence, the outputs concatenated."""
    longest = max(c.shape[-1] for c in clips)
    # One batch, clips zero-padded at the end: the models are causal, so padding changes no
    # output sample of a clip, and the recurrence runs once over the longest clip.
    batch = torch.stack([torch.nn.functional.pad(c, (0, longest - c.shape[-1])) for c in clips])
    y = _call(model, batch)
    return torch.cat([y[i, :, : c.shape[-1]] for i, c in enumerate(clips)], dim=-1)[None]


def _db(value: float) -> float:
    return 10 * math.log10(value) if value > 0 else -math.inf


def _audio_columns(
    y: torch.Tensor,
    target: torch.Tensor,
    suffix: str,
    emphasis: nn.Module,
    stft: nn.Module,
) -> dict[str, float]:
    ratio = float(esr(emphasis(y)[0, 0], emphasis(target)[0, 0]))
    return {
        f"audio_esr_{suffix}_pct": 100 * ratio,
        f"audio_esr_{suffix}_db": _db(ratio),
        f"audio_mrstft_{suffix}": float(stft(y, target)),
    }


def _format(key: str, value: float) -> str:
    """dB to 0.01 dB; ratios (ESR in %, MR-STFT) to 3 significant digits, small ones included."""
    if math.isinf(value):
        return "-inf" if value < 0 else "inf"
    if key.endswith("_db"):
        return f"{value:.2f}"
    return f"{value:.3g}"


def _column_title(key: str) -> str:
    if key.endswith("_db") and key[:-3] in TONE_COLUMNS:
        return f"{TONE_COLUMNS[key[:-3]]} (dB)"
    parts = key.split("_")  # audio_<metric>_<t|r>[_unit]
    metric = {"esr": "ESR", "mrstft": "MR-STFT"}[parts[1]]
    unit = {"pct": " (%)", "db": " (dB)"}.get(parts[3] if len(parts) > 3 else "", "")
    return f"G+B {metric}-{parts[2].upper()}{unit}"


def write_tables(table: dict[str, dict[str, float]], out_dir: Path, notes: Sequence[str]) -> None:
    """Write ``table.csv`` (all columns, full precision) and ``table.md`` (one line per row)."""
    keys = list(next(iter(table.values())))
    with open(out_dir / "table.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", *keys])
        for row, values in table.items():
            writer.writerow([row, *(repr(values[k]) for k in keys)])
    shown = [k for k in keys if not k.endswith("_esr_t_db") and not k.endswith("_esr_r_db")]
    lines = ["| model | " + " | ".join(_column_title(k) for k in shown) + " |"]
    lines.append("|---" * (len(shown) + 1) + "|")
    for row, values in table.items():
        lines.append(f"| {row} | " + " | ".join(_format(k, values[k]) for k in shown) + " |")
    text = "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    (out_dir / "table.md").write_text(text)


def plot_nmr_vs_f0(reports: dict[str, AliasingReport], path: Path) -> Figure:
    """NMR-S in dB against f0 (log axis), one line per row, one panel per tone level."""
    levels = next(iter(reports.values())).levels_dbfs()
    fig = Figure(figsize=(7, 3.2 * len(levels)), dpi=100, layout="constrained")
    axes = fig.subplots(len(levels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, level in zip(axes, levels):
        for row, report in reports.items():
            sel = np.abs(report.column("level_dbfs") - level) < 1e-6
            f0 = report.column("f0_hz")[sel]
            with np.errstate(divide="ignore"):
                nmr = 10 * np.log10(report.column("nmr_s")[sel])
            ax.semilogx(f0, nmr, marker=".", lw=1, label=row)
        ax.axhline(AUDIBILITY_NMR_DB, color="red", ls="--", lw=1, label="audibility threshold")
        ax.set_title(f"Tones at {level:g} dBFS")
        ax.set_ylabel("NMR-S (dB)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("f0 (Hz)")
    fig.savefig(path, format="png")
    return fig


def plot_spectra(
    outputs: dict[str, torch.Tensor], f0_hz: float, sample_rate: float, level_dbfs: float, path
) -> Figure:
    """Chebyshev spectra of each row's steady-state response to one tone, aliases overlaid."""
    fig = Figure(figsize=(8, 2.6 * len(outputs)), dpi=100, layout="constrained")
    axes = fig.subplots(len(outputs), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (row, y) in zip(axes, outputs.items()):
        y = y.reshape(1, -1)
        _, aliases = bandlimit(y, f0_hz, sample_rate)
        nmr = float(self_metrics(y, f0_hz, sample_rate)["nmr_s"][0])
        window = chebyshev_window(y.shape[-1], WINDOW_ATTENUATION_DB).numpy()
        freqs = np.fft.rfftfreq(y.shape[-1], d=1 / sample_rate)
        for signal, label in ((y, "output"), (aliases, "aliases")):
            # dB re a full-scale sine: an amplitude-1 sine on a bin reads 0 dB.
            mag = np.abs(np.fft.rfft(signal[0].numpy() * window)) / (window.sum() / 2)
            ax.plot(freqs, 20 * np.log10(np.maximum(mag, 1e-12)), lw=0.7, label=label)
        ax.set_ylim(-160, 10)
        ax.set_title(f"{row}: f0 = {f0_hz:g} Hz at {level_dbfs:g} dBFS, NMR-S = {_db(nmr):.1f} dB")
        ax.set_ylabel("dB re full scale")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("Frequency (Hz)")
    axes[-1].set_xlim(0, sample_rate / 2)
    fig.savefig(path, format="png")
    return fig


def antialias_report(
    teacher: nn.Module,
    student: nn.Module,
    sample_rate: float,
    out_dir: str | Path,
    reference: ModelLike | None = None,
    *,
    oversampling: int = 2,
    student_oversampled: bool = False,
    levels_dbfs: Sequence[float] = TEST_LEVELS_DBFS,
    tones_per_level: int | None = None,
    tone_duration_s: float = 1.2,
    tone_discard_s: float = 0.2,
    audio: Sequence[str] = DEFAULT_AUDIO,
    audio_seconds: float | None = None,
    audio_gain_db: float = 0.0,
    audio_pre_emphasis: str | None = None,
    spectrum_f0_hz: float = SPECTRUM_F0_HZ,
    spectrum_level_dbfs: float | None = None,
    refine_iterations: int = REFINE_ITERATIONS,
    dtype: torch.dtype = torch.float64,
    batch_size: int = 16,
    export: str | Path | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Measure the rows and columns of the paper's Table 1 and write the report files.

    Args:
        teacher, student: ``LSTMAmp`` or ``WaveNet`` models at ``sample_rate`` (not modified:
            copies in ``dtype`` are measured).
        sample_rate: the models' rate in Hz (at least 36 kHz for the NMR).
        out_dir: folder for the outputs (created).
        reference: optional callable ``(batch, 1, samples) -> same`` at ``sample_rate`` (float64),
            the analog reference device, for the -R columns.
        oversampling: the oversampling factor of the ``*_<L>x`` rows.
        student_oversampled: add the student at ``oversampling`` times the rate as a row.
        levels_dbfs: tone levels; tones_per_level: ``None`` for all 88 notes per level.
        tone_duration_s, tone_discard_s: tone length and discarded onset, seconds (the
            paper's 1.2 and 0.2; shorter tones give a quicker, less precise table).
        audio: demo clip names or audio file paths for the G+B columns (empty: no audio).
        audio_seconds: keep only the first seconds of each clip; audio_gain_db: clip gain.
        audio_pre_emphasis: filter on both signals before the audio ESR (``None``; ``"aw"``
            A-weighting as the paper's code validates, ``"hp"``, ``"lp"``).
        spectrum_f0_hz, spectrum_level_dbfs: the tone of the spectrum figure (level default:
            the loudest of ``levels_dbfs``).
        refine_iterations: of the harmonic analysis (0 = the paper's one-shot estimate).
        dtype: computation dtype of the models (float64 as in the paper's code).
        batch_size: tones per model call.
        export: save the (unchanged) student here too, ``.nam`` or ``.json``.
        progress: show progress bars.

    Returns:
        ``{row: {column: value}}``: ``<metric>_db`` for the tone metrics and, with audio,
        ``audio_esr_t_pct``, ``audio_esr_t_db``, ``audio_mrstft_t`` (and ``_r`` with a
        reference).
    """
    for name, model in (("teacher", teacher), ("student", student)):
        if not isinstance(model, nn.Module):
            raise ValueError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    if reference is not None and not callable(reference):
        raise ValueError(f"reference must be callable, got {type(reference).__name__}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sample_rate = check_sample_rate(sample_rate)
    factor = int(oversampling)
    if factor != oversampling or factor < 2:
        raise ValueError(f"oversampling must be an integer >= 2, got {oversampling!r}")
    if not 0 < float(spectrum_f0_hz) < sample_rate / 2:
        raise ValueError(
            f"spectrum_f0_hz must be in (0, {sample_rate / 2:g}) Hz, got {spectrum_f0_hz!r}"
        )

    base = {"teacher": _prepare(teacher, dtype), "student": _prepare(student, dtype)}
    models: dict[str, tuple[ModelLike, bool]] = {}  # row -> (model, oversampled)
    for row in row_names(factor, student_oversampled):
        source = base[row.split("_")[0]]
        models[row] = (oversample_model(source, factor), True) if "_" in row else (source, False)
    ref = _prepare(reference, dtype) if reference is not None else None

    tones = select_tones(sample_rate, levels_dbfs, tones_per_level, tone_duration_s, tone_discard_s)
    tail = round(TONE_TAIL_S * sample_rate)

    def tone_outputs(model, oversampled, desc, tone_set=tones):
        return render_tone_outputs(
            model, tone_set, tail if oversampled else 0, batch_size, progress, desc
        )

    teacher_out = tone_outputs(base["teacher"], False, "teacher tones")
    ref_out = tone_outputs(ref, False, "reference tones") if ref is not None else None
    reports: dict[str, AliasingReport] = {}
    table: dict[str, dict[str, float]] = {}
    for row, (model, oversampled) in models.items():
        out = teacher_out if row == "teacher" else tone_outputs(model, oversampled, f"{row} tones")
        report = aliasing_metrics(
            out,
            sample_rate,
            tones,
            teacher=teacher_out,
            reference=ref_out,
            batch_size=batch_size,
            progress=progress,
            refine_iterations=refine_iterations,
        )
        report.to_csv(out_dir / f"metrics_{row}.csv")
        reports[row] = report
        means = report.means_db()
        table[row] = {f"{k}_db": means[k] for k in TONE_COLUMNS if k in means}

    notes = [
        f"sample rate {sample_rate:g} Hz; oversampled rows at {factor}x by FFT resampling "
        "(LSTM: delay-line method; WaveNet: dilations scaled)",
        f"{len(tones)} tones: MIDI {sorted(set(tones.midi.int().tolist()))[0]}-"
        f"{sorted(set(tones.midi.int().tolist()))[-1]} "
        f"({len(set(tones.midi.tolist()))} notes) at {', '.join(f'{v:g}' for v in levels_dbfs)} "
        f"dBFS, {tone_duration_s:g} s, first {tone_discard_s:g} s discarded; tone metrics are "
        "10 log10 of the mean over tones; "
        f"harmonic analysis refine_iterations={refine_iterations}",
    ]

    if audio:
        clips = load_clips(audio, round(sample_rate), audio_seconds, audio_gain_db)
        emphasis = make_pre_emphasis(audio_pre_emphasis, sample_rate).to(torch.float64)
        stft = MultiResolutionSTFTLoss().to(torch.float64)
        pad = round(AUDIO_PAD_S * sample_rate)
        audio_models = {
            row: oversample_model(base[row.split("_")[0]], factor, pad) if oversampled else model
            for row, (model, oversampled) in models.items()
        }
        targets = {"t": render_audio(base["teacher"], clips)}
        if ref is not None:
            targets["r"] = render_audio(ref, clips)
        for row in tqdm(audio_models, desc="G+B audio", disable=not progress):
            y = targets["t"] if row == "teacher" else render_audio(audio_models[row], clips)
            for suffix, target in targets.items():
                table[row].update(_audio_columns(y, target, suffix, emphasis, stft))
        seconds = sum(c.shape[-1] for c in clips) / sample_rate
        notes.append(
            f"G+B: {' + '.join(map(str, audio))} ({seconds:.1f} s at {audio_gain_db:g} dB gain), "
            f"ESR pre-emphasis {audio_pre_emphasis or 'none'}; MR-STFT with auraloss defaults"
        )

    write_tables(table, out_dir, notes)
    plot_nmr_vs_f0(reports, out_dir / "nmr_vs_f0.png")

    level = max(levels_dbfs) if spectrum_level_dbfs is None else float(spectrum_level_dbfs)
    tone = _single_tone(spectrum_f0_hz, level, sample_rate, tones)
    spectra = {
        row: tone_outputs(model, oversampled, f"{row} spectrum", tone)[..., tone.discard_samples :]
        for row, (model, oversampled) in models.items()
    }
    plot_spectra(
        spectra,
        spectrum_f0_hz,
        sample_rate,
        level,
        out_dir / f"spectrum_{round(spectrum_f0_hz)}Hz.png",
    )
    if export is not None:
        save_model(student, export)
    return table


def _single_tone(f0_hz: float, level_dbfs: float, sample_rate: float, like: ToneSet) -> ToneSet:
    """One zero-phase tone with the test set's duration and onset."""
    f0 = torch.tensor([float(f0_hz)], dtype=torch.float64)
    amplitude = torch.tensor([10 ** (float(level_dbfs) / 20)], dtype=torch.float64)
    n = torch.arange(like.audio.shape[-1], dtype=torch.float64)
    audio = amplitude[:, None] * torch.sin(2 * math.pi * torch.frac(f0[:, None] / sample_rate * n))
    return ToneSet(
        audio=audio[:, None, :],
        f0_hz=f0,
        amplitude=amplitude,
        level_dbfs=torch.tensor([float(level_dbfs)], dtype=torch.float64),
        midi=69 + 12 * torch.log2(f0 / 440),
        phase=torch.zeros(1, dtype=torch.float64),
        sample_rate=sample_rate,
        discard_samples=like.discard_samples,
    )


def _default_sample_rate(teacher: nn.Module, student: nn.Module) -> float:
    rates = {m.sample_rate for m in (teacher, student) if getattr(m, "sample_rate", None)}
    if len(rates) > 1:
        raise ValueError(
            f"teacher and student have different sample rates {sorted(rates)}; pass --sample-rate"
        )
    if rates:
        return float(rates.pop())
    if isinstance(teacher, LSTMAmp):
        # GuitarML / Proteus JSON files carry no rate; their plug-ins run at 44.1 kHz.
        return float(GUITARML_SAMPLE_RATE)
    raise ValueError("the model files give no sample rate; pass --sample-rate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Table 1 of Carson, Wright & Bilbao (DAFx 2025) for a teacher/student pair.",
    )
    parser.add_argument("--teacher", required=True, help="teacher model (.nam or GuitarML .json)")
    parser.add_argument("--student", required=True, help="student model (.nam or GuitarML .json)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--sample-rate",
        type=float,
        default=None,
        help="model rate in Hz (default: from the files; 44100 for GuitarML files)",
    )
    parser.add_argument("--oversampling", type=int, default=2, help="factor of the *_Lx rows")
    parser.add_argument(
        "--student-oversampled", action="store_true", help="add the student at Lx as a row"
    )
    parser.add_argument(
        "--levels-dbfs",
        type=float,
        nargs="+",
        default=list(TEST_LEVELS_DBFS),
        help="tone levels (default: the paper's -36 -18 -6; its code validates at -20)",
    )
    parser.add_argument(
        "--tones", type=int, default=None, help="notes per level, evenly spread (default: all 88)"
    )
    parser.add_argument(
        "--tone-duration-s", type=float, default=1.2, help="tone length (the paper: 1.2 s)"
    )
    parser.add_argument(
        "--tone-discard-s", type=float, default=0.2, help="onset discarded (the paper: 0.2 s)"
    )
    parser.add_argument(
        "--audio",
        nargs="*",
        default=list(DEFAULT_AUDIO),
        help="demo clip names or audio files for the G+B columns (none: skip them)",
    )
    parser.add_argument("--audio-seconds", type=float, default=None, help="seconds of each clip")
    parser.add_argument("--audio-gain-db", type=float, default=0.0, help="gain on the clips, dB")
    parser.add_argument(
        "--audio-pre-emphasis",
        choices=("none", "aw", "hp", "lp"),
        default="none",
        help="filter before the audio ESR ('aw' as the paper's code validates)",
    )
    parser.add_argument("--spectrum-f0-hz", type=float, default=SPECTRUM_F0_HZ)
    parser.add_argument("--spectrum-level-dbfs", type=float, default=None)
    parser.add_argument(
        "--refine-iterations",
        type=int,
        default=REFINE_ITERATIONS,
        help="harmonic-analysis refinement passes (0 = the paper's one-shot estimate)",
    )
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--batch-size", type=int, default=16, help="tones per model call")
    parser.add_argument("--export", default=None, help="also save the student here (.nam/.json)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    teacher = load_model(args.teacher)
    student = load_model(args.student)
    sample_rate = args.sample_rate or _default_sample_rate(teacher, student)
    table = antialias_report(
        teacher,
        student,
        sample_rate,
        args.out,
        oversampling=args.oversampling,
        student_oversampled=args.student_oversampled,
        levels_dbfs=args.levels_dbfs,
        tones_per_level=args.tones,
        tone_duration_s=args.tone_duration_s,
        tone_discard_s=args.tone_discard_s,
        audio=args.audio,
        audio_seconds=args.audio_seconds,
        audio_gain_db=args.audio_gain_db,
        audio_pre_emphasis=None if args.audio_pre_emphasis == "none" else args.audio_pre_emphasis,
        spectrum_f0_hz=args.spectrum_f0_hz,
        spectrum_level_dbfs=args.spectrum_level_dbfs,
        refine_iterations=args.refine_iterations,
        dtype=getattr(torch, args.dtype),
        batch_size=args.batch_size,
        export=args.export,
        progress=not args.no_progress,
    )
    print((Path(args.out) / "table.md").read_text(), end="")
    return 0 if table else 1


if __name__ == "__main__":
    sys.exit(main())
