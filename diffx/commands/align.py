"""``diffx align``: line a dry recording up with a processed ("wet") one, in phase.

    diffx align --dry dry.wav --wet wet.wav --out aligned.wav

fits, per channel, a polarity, a delay and an allpass cascade so that the dry sums with the wet
with as little comb filtering as possible, keeps whichever sums best (a delay alone included),
and writes

- ``aligned.wav``: the aligned dry (the wet's channel count; 24-bit unless the dry is float);
- ``aligned.json``: the filter, per channel (:mod:`diffx.io.phase_alignment`; reusable from Python
  with :func:`diffx.io.load_alignment` and ``Alignment.apply``);
- ``aligned.png``: the measured and fitted phase response and group delay.

Methods (``--method``):

- ``fit`` (default): :func:`diffx.analysis.allpass_fit.fit_pair`, a least-squares allpass
  design of every order up to ``2 * --sections`` poles from the measured phase, refined by
  Levenberg-Marquardt, the fewest poles that fit kept. Deterministic, a few seconds per
  channel on one core; on the generated suite of ``benchmarks/bench_align.py`` it finds the phase of
  known cascades of up to 8 sections (see docs/phase_alignment.md).
- ``biasnet``: the method of Bargum et al. (2023), a :class:`diffx.nn.BiasNet` cascade trained
  by gradient descent (:class:`diffx.tasks.PhaseAlignment`; four second-order sections by
  default, and a single first-order section tried as well). Slow, and it settles in local
  minima on most cascades of more than one section.

It prints the parallel-mix test (comb-filter loss in dB, normalized cross-correlation at
lag 0) before alignment, after the best integer delay and after the full alignment.

Input handling: the wet is resampled to the dry's rate when they differ (said so); lengths
may differ by up to ``--max-length-diff-ms`` (the longer is trimmed to the shorter for
fitting; the output keeps the dry's length), more is refused; a mono dry is aligned to each
channel of a multi-channel wet, and a multi-channel dry needs a wet with as many channels or a
mono one; silent files, and files shorter than
:data:`~diffx.analysis.allpass_fit.MIN_PAIR_SAMPLES` (1024 samples, 23 ms at 44.1 kHz: too
short to measure a phase response), are refused; clipped files are aligned with a warning
(clipping is not a phase shift, so the fit can only be partial). A refused input is one line on
stderr and exit status 2, and nothing is written.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

from diffx._errors import USER_ERRORS, UserError
from diffx.analysis.allpass_fit import MIN_PAIR_SAMPLES
from diffx.analysis.phase_alignment import (
    apply_delay,
)
from diffx.commands._frontend import CommandParser, check_output_audio, report
from diffx.io.phase_alignment import save_alignments
from diffx.tasks.phase_alignment import METHODS, align, check_layout, clipped_fraction


def _read(path: str, what: str, sample_rate: int | None = None):
    from diffx.io.audio import load_audio

    try:
        return load_audio(path, sample_rate=sample_rate)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"--{what}: {err}") from None


def _biasnet_kwargs(args) -> dict:
    """``fit_channel`` arguments from the command line (``--method biasnet``)."""
    fit_kwargs = dict(
        kind=args.kind,
        n_second=args.sections if args.kind not in ("first_order",) else 0,
        n_first=args.first_order if args.kind != "first_order" else max(args.first_order, 1),
        steps=args.steps,
        weighting=args.weighting,
        max_delay_ms=args.max_delay_ms,
        seed=args.seed,
    )
    if args.kind in ("mixed", "warped_stretched") and fit_kwargs["n_first"] == 0:
        fit_kwargs["n_first"] = 1
    return fit_kwargs


def main(argv: list[str] | None = None) -> int:
    """``diffx align``; a user's mistake is one line on stderr and exit status 2
    (:mod:`diffx._errors`), before any output is written."""
    parser = CommandParser(
        prog="diffx align",
        description="phase-align a dry recording to a processed one with allpass filters",
    )
    parser.add_argument("--dry", required=True, help="the unprocessed recording")
    parser.add_argument("--wet", required=True, help="the processed recording")
    parser.add_argument("--out", required=True, help="aligned dry audio to write (.wav/.flac)")
    parser.add_argument("--method", default="fit", choices=METHODS,
                        help="fit: least-squares design + refinement (fast, finds the phase); "
                             "biasnet: Bargum et al.'s gradient descent (default: %(default)s)")
    parser.add_argument("--sections", type=int, default=None,
                        help="second-order sections: the most the fit may use (default 8), or "
                             "exactly this many with --method biasnet (default 4)")
    parser.add_argument("--kind", default="second_order",
                        choices=["second_order", "mixed", "first_order", "warped",
                                 "warped_stretched"],
                        help="allpass sections of --method biasnet (default: %(default)s)")
    parser.add_argument("--first-order", type=int, default=0,
                        help="first-order sections of --method biasnet (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=1000,
                        help="optimizer steps per fit of --method biasnet")
    parser.add_argument("--no-first-order-try", action="store_true",
                        help="--method biasnet: do not also fit a single first-order section")
    parser.add_argument("--no-delay-fallback", action="store_true",
                        help="--method fit: keep the cascade even where a delay alone sums "
                             "better")  # fmt: skip
    parser.add_argument("--weighting", default=None,
                        choices=["auto", "coherence", "cross_power"],
                        help="frequency weights of the phase fit (default: auto with --method "
                             "fit: coherence, then cross_power where that leaves the mix short "
                             "of perfect; cross_power with --method biasnet)")
    parser.add_argument("--max-delay-ms", type=float, default=100.0,
                        help="search the bulk delay within +-this ms (default: %(default)s)")
    parser.add_argument("--max-length-diff-ms", type=float, default=50.0,
                        help="trim files whose lengths differ by at most this much")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.sections is None:
        args.sections = 8 if args.method == "fit" else 4
    if args.weighting is None:
        args.weighting = "auto" if args.method == "fit" else "cross_power"
    if args.method == "biasnet" and args.weighting == "auto":
        parser.error("--weighting auto is for --method fit; biasnet takes coherence or "
                     "cross_power")
    for name in ("sections", "first_order", "steps"):
        if getattr(args, name) < 0 or (name == "steps" and args.steps < 1):
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.method == "fit" and args.sections < 1:
        parser.error("--sections must be at least 1 with --method fit")
    for name in ("max_delay_ms", "max_length_diff_ms"):
        if not 0 <= getattr(args, name) < math.inf:
            parser.error(f"--{name.replace('_', '-')} must be a finite number >= 0")
    try:
        return _run(args)
    except USER_ERRORS as error:
        return report("align", error)


def _run(args) -> int:
    check_output_audio(args.out)
    dry, sample_rate = _read(args.dry, "dry")
    wet_info = _read(args.wet, "wet")
    if wet_info[1] != sample_rate:
        print(f"resampling the wet from {wet_info[1]} Hz to the dry's {sample_rate} Hz")
        wet, _ = _read(args.wet, "wet", sample_rate)
    else:
        wet = wet_info[0]
    for option, path, audio in (("--dry", args.dry, dry), ("--wet", args.wet, wet)):
        if audio.shape[-1] < MIN_PAIR_SAMPLES:
            raise UserError(
                f"{option}: {path} has {audio.shape[-1]} samples: too short to measure a phase "
                f"response (at least {MIN_PAIR_SAMPLES}: "
                f"{1000 * MIN_PAIR_SAMPLES / sample_rate:.0f} ms at {sample_rate} Hz)"
            )
    diff = abs(dry.shape[-1] - wet.shape[-1])
    if diff > args.max_length_diff_ms * sample_rate / 1000:
        raise UserError(
            f"the dry {args.dry} has {dry.shape[-1]} samples and the wet {args.wet} "
            f"{wet.shape[-1]} "
            f"({1000 * diff / sample_rate:.0f} ms apart, more than --max-length-diff-ms="
            f"{args.max_length_diff_ms:g}); are they the same take?"
        )
    length = min(dry.shape[-1], wet.shape[-1])
    if diff:
        print(f"lengths differ by {diff} samples; fitting on the first {length}")
    check_layout(dry, wet, f"the dry file {args.dry}", f"the wet file {args.wet}")
    channels = max(dry.shape[0], wet.shape[0])
    for name, audio, path in (("dry", dry, args.dry), ("wet", wet, args.wet)):
        share = clipped_fraction(audio)
        if share > 1e-4:
            print(
                f"warning: the {name} file {path} is clipped ({100 * share:.2f} % of samples at "
                "full scale); clipping is not a phase shift, so the alignment can only be partial"
            )

    if args.method == "fit":
        fit_kwargs = dict(max_sections=args.sections, weighting=args.weighting,
                          max_delay_ms=args.max_delay_ms,
                          fallback_to_delay=not args.no_delay_fallback)  # fmt: skip
    else:
        fit_kwargs = _biasnet_kwargs(args)
    try:
        results = align(dry[:, :length], wet[:, :length], sample_rate, method=args.method,
                        try_first_order=not args.no_first_order_try, **fit_kwargs)  # fmt: skip
    except ValueError as err:  # no coherent energy: the files, not the code
        raise UserError(f"cannot align {args.dry} and {args.wet}: {err}") from None

    out = Path(args.out)
    aligned = np.stack([
        r.alignment.apply(dry[min(c, dry.shape[0] - 1)].double().numpy())
        for c, r in enumerate(results)
    ])  # fmt: skip
    from diffx.io.audio import save_audio

    peak = float(np.abs(aligned).max())
    if peak > 1.0:
        print(f"note: the aligned dry peaks at {20 * math.log10(peak):+.2f} dBFS; writing float")
    save_audio(out, aligned.astype(np.float32), sample_rate, subtype="FLOAT" if peak > 1 else None)
    for r in results:
        r.alignment.report = {
            "as_recorded": vars(r.before), "integer_delay": vars(r.integer_delay),
            "allpass_alignment": vars(r.after),
        }  # fmt: skip
    filter_path = save_alignments([r.alignment for r in results], out.with_suffix(".json"),
                                  dry=str(args.dry), wet=str(args.wet))  # fmt: skip
    _figure(results, dry, wet, length, sample_rate, out.with_suffix(".png"))

    print(f"\nparallel-mix test ({channels} channel{'s' if channels > 1 else ''}):")
    print(f"{'':>4} {'stage':<22} {'comb-filter loss':>17} {'NCC at lag 0':>13}")
    for c, r in enumerate(results):
        for stage, rep in (("as recorded", r.before), ("integer delay", r.integer_delay),
                           ("allpass alignment", r.after)):  # fmt: skip
            print(f"{c:>4} {stage:<22} {rep.comb_loss_db:>+14.2f} dB {rep.ncc:>+13.4f}")
        a = r.alignment
        if not len(a.sos):
            print("     no allpass section sums better than the delay alone: delay only")
        delay_ms = 1000 * a.delay_samples / sample_rate
        print(f"     delay {a.delay_samples:+.2f} samples ({delay_ms:+.3f} ms), "
              f"polarity {a.polarity:+d}")  # fmt: skip
    print(f"\nwrote {out}, {filter_path} and {out.with_suffix('.png')}")
    return 0


def _figure(results, dry, wet, length, sample_rate, path) -> None:
    """Phase and group delay of channel 0's fit against its measurement."""
    from diffx.analysis.phase_alignment import estimate_response
    from diffx.analysis.plots import plot_phase_alignment
    from diffx.functional import group_delay, phase_response

    a = results[0].alignment
    x = dry[0, :length].double().numpy()
    y = wet[0, :length].double().numpy()
    shifted = apply_delay(x, round(a.delay_samples), a.polarity)
    response = estimate_response(shifted, y, sample_rate)
    f = response.freqs_hz[1:]
    residual = a.delay_samples - round(a.delay_samples)
    phase = -2 * np.pi * f / sample_rate * residual
    delay = np.full_like(f, residual)
    if len(a.sos):
        sos = torch.as_tensor(a.sos)
        phase = phase + phase_response(sos, f, sample_rate).numpy()
        delay = delay + group_delay(sos, f, sample_rate).numpy()
    measured_delay = -np.gradient(np.unwrap(response.phase_rad[1:]), 2 * np.pi * f / sample_rate)
    plot_phase_alignment(
        f, response.phase_rad[1:], phase, measured_delay, delay, response.coherence[1:],
        sample_rate=sample_rate, path=path,
        title=f"channel 0: {a.kind}, delay {a.delay_samples:+.2f} samples",
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
