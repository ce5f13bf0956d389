"""``diffx timbre``: play a recording's melody on the instrument a DDSP model was trained on.

    diffx timbre --input voice.wav --ckpt violin.ckpt --out out.wav [--pitch-shift 1]
                 [--loudness-shift -3] [--no-auto-adjust] [--plot out.png]

loads a :class:`diffx.tasks.TimbreTransfer` checkpoint, extracts the input's f0 (CREPE, the same
model the training features came from) and A-weighted loudness, adjusts them, and synthesizes.

Adjustments, in this order (as the DDSP timbre-transfer demo):

1. automatic (default on; ``--no-auto-adjust`` turns it off): the loudness of the input's
   notes is quantile-mapped onto the loudness of the training data's notes, and frames with
   no detected note (silence, breaths, unvoiced consonants) are turned down by 20 dB
   (:func:`diffx.analysis.features.adjust_loudness`);
2. ``--loudness-shift`` dB added to every frame;
3. ``--pitch-shift`` octaves (a number, or ``auto``: the whole octaves that bring the input's
   mean note pitch nearest the training data's). The command prints that suggestion.

The input is read as mono (channels averaged) at the model's sample rate, and the output is
written at that rate (16 kHz for DDSP models), as long as the input. It is written as 32-bit
float, with a warning, if it exceeds full scale, so nothing is clipped. An input shorter than
:data:`MIN_SECONDS` (0.1 s) is refused; every refusal (a file, the checkpoint, an option) is one
line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffx._errors import (
    USER_ERRORS,
    CommandParser,
    UserError,
    check_checkpoint,
    check_output_audio,
    read_user_audio,
    report,
)
from diffx.analysis.features import (
    LOUDNESS_FLOOR_DB,
    QUIET_DB,
    a_weighted_loudness_db,
    adjust_loudness,
    crepe_pitch,
    detect_notes,
)
from diffx.analysis.tones import hz_to_midi

MIN_SECONDS = 0.1
"""The shortest input: CREPE's analysis window is 1024 samples (64 ms at 16 kHz), and the
``--plot`` spectrograms need as much again; shorter files are refused before anything is
written."""


@dataclass
class TransferResult:
    """What :func:`timbre_transfer` made, with the features it made it from.

    ``audio (samples,)`` float32 at ``sample_rate``; the ``(frames,)`` arrays are the input's
    measured features (``f0_hz``, ``confidence``, ``loudness_db``, ``note_mask``) and the
    controls the model played (``f0_control_hz``, ``loudness_control_db``).
    """

    audio: np.ndarray
    sample_rate: int
    frame_rate_hz: int
    f0_hz: np.ndarray
    confidence: np.ndarray
    loudness_db: np.ndarray
    note_mask: np.ndarray
    f0_control_hz: np.ndarray
    loudness_control_db: np.ndarray
    pitch_shift_octaves: float
    suggested_octaves: int | None


def load_timbre_model(ckpt: str | Path):
    """A trained :class:`~diffx.tasks.TimbreTransfer` from a checkpoint, on the CPU, in eval mode.

    Raises:
        UserError: no such file, or not a checkpoint (empty, truncated, another kind of file).
        ValueError: a checkpoint, but not a timbre-transfer one.
    """
    from diffx.tasks import TimbreTransfer

    path = check_checkpoint(ckpt, "--ckpt")  # missing, empty, truncated: named, not unpickled
    try:
        model = TimbreTransfer.load_from_checkpoint(path, map_location="cpu")
    except (KeyError, RuntimeError, TypeError, ValueError, EOFError) as error:
        raise ValueError(
            f"{path} is not a TimbreTransfer checkpoint ({type(error).__name__}: {error})"
        ) from error
    return model.eval()


def suggest_octaves(mean_input_midi: float, mean_training_midi: float) -> int:
    """Whole octaves that bring a mean pitch nearest the training data's (ties go up)."""
    return int(math.floor((mean_training_midi - mean_input_midi) / 12.0 + 0.5))


def timbre_transfer(
    model,
    audio: torch.Tensor,
    pitch_shift_octaves: float | str = 0.0,
    loudness_shift_db: float = 0.0,
    auto_adjust: bool = True,
    quiet_db: float = QUIET_DB,
    noise_seed: int | None = 0,
) -> TransferResult:
    """Resynthesize ``audio (samples,)`` (mono, at ``model.sample_rate``) with ``model``.

    Args:
        model: a trained :class:`~diffx.tasks.TimbreTransfer`.
        pitch_shift_octaves: octaves to move f0 by, or ``"auto"`` (see the module docs).
        loudness_shift_db: dB added to the loudness after the automatic adjustment.
        auto_adjust: map the note loudness onto the training data's and quiet the gaps.
        quiet_db: dB taken off frames without a note by the automatic adjustment.
        noise_seed: seed of the filtered noise (``None``: torch's global generator).

    Raises:
        ValueError: bad audio (NaN, Inf, empty), an unknown pitch shift, or ``auto`` without
            training statistics in the checkpoint.
    """
    if not isinstance(audio, torch.Tensor) or audio.dim() != 1 or audio.numel() == 0:
        raise ValueError("audio must be a non-empty 1-D tensor (mono samples)")
    sample_rate, frame_rate = model.sample_rate, model.frame_rate_hz
    f0_hz, confidence = crepe_pitch(audio, sample_rate, frame_rate, model=model.crepe_model)
    loudness = a_weighted_loudness_db(audio, sample_rate, frame_rate)
    f0_np, conf_np, ld_np = f0_hz.numpy(), confidence.numpy(), loudness.numpy()
    mask, _ = detect_notes(ld_np, conf_np)

    has_statistics = bool(torch.isfinite(model.mean_pitch_midi))
    suggested = None
    if has_statistics and mask.any():
        mean_midi = float(hz_to_midi(torch.from_numpy(f0_np[mask])).mean())
        suggested = suggest_octaves(mean_midi, float(model.mean_pitch_midi))

    if pitch_shift_octaves == "auto":
        if suggested is None:
            raise ValueError(
                "--pitch-shift auto needs notes in the input and the training data's pitch "
                "statistics in the checkpoint (saved by `diffx fit` with a TimbreDataModule)"
            )
        pitch_shift_octaves = float(suggested)
    try:
        pitch_shift_octaves = float(pitch_shift_octaves)
    except (TypeError, ValueError):
        raise ValueError(
            f"pitch shift must be a number of octaves or 'auto', got {pitch_shift_octaves!r}"
        ) from None
    if not math.isfinite(pitch_shift_octaves) or not math.isfinite(float(loudness_shift_db)):
        raise ValueError("pitch and loudness shifts must be finite numbers")

    control_db = ld_np.astype(np.float64)
    if auto_adjust:
        if has_statistics:
            control_db, _ = adjust_loudness(
                ld_np, conf_np, model.loudness_quantiles_db.numpy(), quiet_db=quiet_db
            )
        else:
            warnings.warn(
                "the checkpoint holds no training-loudness statistics; the loudness is not "
                "adjusted",
                stacklevel=2,
            )
    control_db = np.maximum(control_db + float(loudness_shift_db), LOUDNESS_FLOOR_DB)
    control_f0 = f0_np.astype(np.float64) * 2.0**pitch_shift_octaves

    with torch.no_grad():
        out = model(
            torch.from_numpy(control_f0).float()[None],
            torch.from_numpy(control_db).float()[None],
            noise_seed=noise_seed,
        )["audio"]
    return TransferResult(
        audio=out[0, 0, : audio.numel()].numpy().astype(np.float32),
        sample_rate=sample_rate,
        frame_rate_hz=frame_rate,
        f0_hz=f0_np,
        confidence=conf_np,
        loudness_db=ld_np,
        note_mask=mask,
        f0_control_hz=control_f0,
        loudness_control_db=control_db,
        pitch_shift_octaves=pitch_shift_octaves,
        suggested_octaves=suggested,
    )


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(
        prog="diffx timbre",
        description="play a recording's melody on the instrument a DDSP timbre-transfer "
        "model was trained on",
    )
    parser.add_argument("--input", required=True, help="audio file (monophonic: voice, guitar)")
    parser.add_argument("--ckpt", required=True, help="TimbreTransfer checkpoint (.ckpt)")
    parser.add_argument("--out", required=True, help="output audio file (.wav, .flac)")
    parser.add_argument(
        "--pitch-shift",
        default="0",
        help="octaves to shift the pitch by (e.g. 1, -1, 0.5), or 'auto' (default: 0)",
    )
    parser.add_argument(
        "--loudness-shift", type=float, default=0.0, help="dB added to the loudness (default: 0)"
    )
    parser.add_argument(
        "--no-auto-adjust",
        action="store_true",
        help="do not map the loudness onto the training data's or quiet the frames without notes",
    )
    parser.add_argument(
        "--quiet-db", type=float, default=QUIET_DB,
        help="dB taken off frames without a note (default: %(default)s)",
    )
    parser.add_argument("--plot", default=None, help="also write f0, loudness and spectrograms")
    args = parser.parse_args(argv)

    from diffx.io.audio import save_audio

    try:
        # What the user named is checked before the model is loaded and anything is written.
        check_output_audio(args.out)
        if args.plot and Path(args.plot).is_dir():
            raise UserError(f"--plot {args.plot} is a folder; give a file name")
        for option in ("loudness_shift", "quiet_db"):
            if not math.isfinite(getattr(args, option)):
                raise UserError(f"--{option.replace('_', '-')} must be a finite number of dB")
        read_user_audio(args.input, "--input", MIN_SECONDS)  # at its own rate: no resampling
        model = load_timbre_model(args.ckpt)
        audio, _ = read_user_audio(args.input, "--input", sample_rate=model.sample_rate, mono=True)
        result = timbre_transfer(
            model,
            audio[0],
            pitch_shift_octaves=args.pitch_shift,
            loudness_shift_db=args.loudness_shift,
            auto_adjust=not args.no_auto_adjust,
            quiet_db=args.quiet_db,
        )
    except (*USER_ERRORS, ImportError) as error:
        return report("timbre", error)

    notes = float(result.note_mask.mean())
    print(f"notes detected on {100 * notes:.0f}% of {result.note_mask.size} frames")
    if notes == 0:
        warnings.warn("no note detected in the input: the output is near silent", stacklevel=1)
    print(f"pitch shift: {result.pitch_shift_octaves:+g} octaves", end="")
    if result.suggested_octaves is not None:
        print(f" (the training data's register suggests {result.suggested_octaves:+d})")
    else:
        print()
    peak = float(np.abs(result.audio).max())
    subtype = None
    if peak > 1.0:
        warnings.warn(
            f"the output peaks at {20 * math.log10(peak):+.1f} dBFS; written as 32-bit float "
            "(lower --loudness-shift for a fixed-point file)",
            stacklevel=1,
        )
        subtype = "FLOAT"
    save_audio(args.out, result.audio[None], result.sample_rate, subtype=subtype)
    print(f"wrote {args.out} ({result.sample_rate} Hz)")
    if args.plot:
        from diffx.analysis.plots import plot_timbre_transfer

        out_f0, _ = crepe_pitch(
            torch.from_numpy(result.audio), result.sample_rate, result.frame_rate_hz,
            model=model.crepe_model,
        )
        out_ld = a_weighted_loudness_db(
            torch.from_numpy(result.audio), result.sample_rate, result.frame_rate_hz
        )
        plot_timbre_transfer(
            audio[0].numpy(), result.audio, result.sample_rate, result.frame_rate_hz,
            result.f0_control_hz, result.loudness_control_db, out_f0.numpy(), out_ld.numpy(),
            titles=(Path(args.input).name, Path(args.out).name), path=args.plot,
        )
        print(f"wrote {args.plot}")
    return 0
