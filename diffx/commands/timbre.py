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
from pathlib import Path

import numpy as np
import torch

from diffx._errors import USER_ERRORS, UserError
from diffx.analysis.features import (
    QUIET_DB,
    a_weighted_loudness_db,
    crepe_pitch,
)
from diffx.commands._frontend import CommandParser, check_output_audio, read_user_audio, report
from diffx.tasks.runs import load_timbre_model
from diffx.tasks.timbre_transfer import transfer_timbre

MIN_SECONDS = 0.1
"""The shortest input: CREPE's analysis window is 1024 samples (64 ms at 16 kHz), and the
``--plot`` spectrograms need as much again; shorter files are refused before anything is
written."""


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
        result = transfer_timbre(
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
