"""``diffx postfilter``: make feature pairs, compute GV statistics, merge trained post-filters,
and post-filter features or audio.

    diffx postfilter pairs --timbre-ckpt VIOLIN.ckpt --instrument violin --out pairs/
    diffx postfilter pairs --predicted PRED_DIR --natural NAT_DIR --split train --out pairs/
    diffx postfilter gv --natural pairs/train/out_postfilter --out gv.npz [--stream mgc:2]
    diffx postfilter merge MGC.pt BAP.pt --out merged.pt
    diffx postfilter apply --input IN.wav|IN.npy --out OUT.wav|OUT.npy \\
        [--postfilter merged.pt|run.ckpt] [--gv gv.npz --strength 1.0]

``apply`` on audio runs WORLD analysis with the settings the post-filter was trained with,
post-filters the features (the GAN first, then GV scaling, when both are given) and
synthesizes the result; on a ``.npy`` of raw features it writes the filtered features, plus a
``.wav`` beside them when the features are WORLD's. Audio shorter than :data:`MIN_SECONDS`
(0.1 s) and features shorter than :data:`MIN_FRAMES` are refused; every refusal is one line on
stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from diffx._errors import USER_ERRORS, UserError
from diffx.analysis.acoustic import WorldSettings, world_analysis, world_synthesis
from diffx.commands._frontend import CommandParser, check_output_audio, read_user_audio, report
from diffx.functional.postfilter import StreamLayout
from diffx.nn.postfilter import GVPostFilter, merge_postfilters
from diffx.tasks.postfilter import enhance_features
from diffx.tasks.runs import load_postfilter, save_postfilter

MIN_SECONDS = 0.1
"""The shortest audio ``apply`` and ``pairs`` analyse: WORLD's f0 and spectral analysis
windows span three periods of the lowest f0 searched (42 ms at 71 Hz); 0.1 s also gives
:data:`MIN_FRAMES` frames of 5 ms."""


MIN_FRAMES = 20
"""The fewest feature frames ``apply`` post-filters (0.1 s at 5 ms frames)."""


def _check_strength(strength: float) -> None:
    if not 0 <= strength < float("inf"):
        raise UserError(f"--strength must be a finite number >= 0, got {strength}")


# -- command line ----------------------------------------------------------------------------


def _world_from_args(args) -> WorldSettings:
    return WorldSettings(
        args.sample_rate,
        args.frame_period_ms,
        args.mgc_order,
        None,
        args.f0_floor_hz,
        args.f0_ceil_hz,
        args.f0_method,
    )


def _pairs(args) -> int:
    from diffx.data.postfilter import audio_pairs, make_pairs
    from diffx.io.audio import load_audio

    splits: dict[str, list] = {}
    if args.timbre_ckpt:
        from diffx.data.timbre_transfer import SPLITS, instrument_files
        from diffx.tasks.runs import load_timbre_model
        from diffx.tasks.timbre_transfer import transfer_timbre

        model = load_timbre_model(args.timbre_ckpt)
        if args.sample_rate != model.sample_rate:
            raise ValueError(
                f"--sample-rate {args.sample_rate} differs from the model's {model.sample_rate}"
            )
        for split in SPLITS:
            for path in instrument_files(args.instrument, split):
                audio, _ = load_audio(path, model.sample_rate, mono=True)
                result = transfer_timbre(model, audio[0], auto_adjust=False, noise_seed=0)
                splits.setdefault(split, []).append((path.stem, result.audio, audio[0].numpy()))
    else:
        if not (args.predicted and args.natural):
            raise ValueError("give --timbre-ckpt, or both --predicted and --natural")
        for option in ("predicted", "natural"):
            if not Path(getattr(args, option)).is_dir():
                raise UserError(f"--{option} {getattr(args, option)}: no such folder")
        splits = audio_pairs(args.predicted, args.natural, args.sample_rate, args.split)
    # Checked before make_pairs writes the first pair.
    for items in splits.values():
        for name, predicted, natural in items:
            samples = min(len(predicted), len(natural))
            if samples < MIN_SECONDS * args.sample_rate:
                raise UserError(
                    f"pair {name!r}: {1000 * samples / args.sample_rate:.3g} ms of audio; "
                    f"WORLD analysis needs at least {1000 * MIN_SECONDS:g} ms"
                )
    out = make_pairs(splits, args.out, _world_from_args(args))
    counts = {k: len(v) for k, v in splits.items()}
    print(f"wrote feature pairs {counts} to {out}")
    return 0


def _parse_streams(values: list[str]) -> dict[str, int]:
    streams = {}
    for value in values:
        name, _, offset = value.partition(":")
        try:
            streams[name] = int(offset or 0)
        except ValueError:
            raise ValueError(f"--stream takes NAME or NAME:OFFSET, got {value!r}") from None
    return streams


def _gv(args) -> int:
    _check_strength(args.strength)
    if not Path(args.natural).is_dir():
        raise UserError(f"--natural {args.natural}: no such folder")
    layout = StreamLayout.from_dict(args.streams) if args.streams else None
    from diffx.data.postfilter import gv_postfilter_from_folder

    gv = gv_postfilter_from_folder(
        args.natural,
        layout,
        _parse_streams(args.stream or ["mgc:2"]),
        args.strength,
        voiced_only=not args.all_frames,
    )
    gv.save(args.out)
    print(f"wrote GV statistics of {args.natural} to {args.out}")
    return 0


def _merge(args) -> int:
    loaded = [load_postfilter(p, "POSTFILTER") for p in args.postfilters]
    worlds = {tuple(sorted(w.to_dict().items())) for _, w in loaded if w is not None}
    if len(worlds) > 1:
        raise ValueError("the post-filters were trained on features with different WORLD settings")
    merged = merge_postfilters([m for m, _ in loaded])
    world = next((w for _, w in loaded if w is not None), None)
    path = save_postfilter(merged, world, args.out)
    print(f"merged streams {sorted(merged.filters)} into {path}")
    return 0


def _apply(args) -> int:
    import soundfile as sf

    if not (args.postfilter or args.gv):
        raise ValueError("give --postfilter, --gv or both")
    # Everything the user named is checked before anything is written.
    src, out = Path(args.input), Path(args.out)
    if out.suffix.lower() != ".npy":
        check_output_audio(out)
    if args.strength is not None:
        _check_strength(args.strength)
    postfilter, world = load_postfilter(args.postfilter) if args.postfilter else (None, None)
    gv = GVPostFilter.load(args.gv, strength=args.strength) if args.gv else None
    if not src.is_file():
        raise FileNotFoundError(f"--input {src}: no such file")
    layout = postfilter.layout if postfilter is not None else gv.layout
    if gv is not None and gv.layout != layout:
        raise ValueError(f"--gv's streams {gv.layout.to_dict()} differ from {layout.to_dict()}")
    if out.suffix.lower() != ".npy" and world is None and src.suffix.lower() == ".npy":
        raise ValueError("writing audio needs WORLD features; give an .npy --out")
    if src.suffix.lower() == ".npy":
        from diffx.data.postfilter import read_features

        features = read_features(src, layout.dims)
        if features.shape[0] < MIN_FRAMES:
            raise UserError(
                f"--input {src} holds {features.shape[0]} frames; at least {MIN_FRAMES} are needed"
            )
    else:
        if world is None and not args.sample_rate_given:
            raise ValueError(
                "no WORLD settings come with the post-filter: give --sample-rate (and the "
                "other analysis options the features were made with), or post-filter .npy "
                "features"
            )
        world = world or _world_from_args(args)
        audio, _ = read_user_audio(src, "--input", MIN_SECONDS, world.sample_rate, mono=True)
        if not torch.any(audio != 0):
            print(f"warning: {src} is silent", file=sys.stderr)
        features = layout.join(world_analysis(audio[0].numpy(), world))
    enhanced = enhance_features(features, postfilter, gv, seed=args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npy":
        np.save(out, enhanced)
        if world is not None:
            sf.write(
                out.with_suffix(".wav"),
                world_synthesis(layout.split(enhanced), world),
                world.sample_rate,
            )
    else:
        sf.write(out, world_synthesis(layout.split(enhanced), world), world.sample_rate)
    print(f"wrote {out}")
    return 0


def _add_world_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sample-rate", type=int, default=16000, help="Hz (default: %(default)s)")
    parser.add_argument("--frame-period-ms", type=float, default=5.0)
    parser.add_argument("--mgc-order", type=int, default=59)
    parser.add_argument("--f0-floor-hz", type=float, default=71.0)
    parser.add_argument("--f0-ceil-hz", type=float, default=800.0)
    parser.add_argument("--f0-method", choices=("harvest", "dio"), default="harvest")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="diffx postfilter", description="post-filters for predicted acoustic features"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    pairs = sub.add_parser("pairs", help="WORLD feature pairs (predicted, natural) from audio")
    pairs.add_argument("--out", required=True, help="pairs folder (NNSVS layout)")
    pairs.add_argument(
        "--timbre-ckpt",
        help="a TimbreTransfer checkpoint: its resynthesis of "
        "the shipped phrases of --instrument is the prediction",
    )
    pairs.add_argument("--instrument", default="violin")
    pairs.add_argument("--predicted", help="folder of predicted audio")
    pairs.add_argument("--natural", help="folder of natural audio (same file names)")
    pairs.add_argument("--split", default="train", choices=("train", "valid", "test"))
    _add_world_options(pairs)

    gv = sub.add_parser("gv", help="GV statistics of natural features")
    gv.add_argument("--natural", required=True, help="folder of natural .npy features")
    gv.add_argument("--out", required=True, help="the .npz to write")
    gv.add_argument("--stream", action="append", help="NAME[:OFFSET] to scale (default mgc:2)")
    gv.add_argument("--strength", type=float, default=1.0)
    gv.add_argument("--all-frames", action="store_true", help="not only voiced frames")
    gv.set_defaults(streams=None)

    merge = sub.add_parser("merge", help="merge post-filters trained on different streams")
    merge.add_argument("postfilters", nargs="+", help="postfilter.pt files or checkpoints")
    merge.add_argument("--out", required=True)

    apply = sub.add_parser("apply", help="post-filter audio or features")
    apply.add_argument("--input", required=True, help=".wav/.flac audio or .npy raw features")
    apply.add_argument("--out", required=True, help=".wav or .npy")
    apply.add_argument("--postfilter", help="postfilter.pt or a GANPostFilter checkpoint")
    apply.add_argument("--gv", help="GV statistics (.npz from `gv` or a training run)")
    apply.add_argument("--strength", type=float, default=None, help="GV strength (default: saved)")
    apply.add_argument("--seed", type=int, default=0, help="the GAN's noise seed")
    _add_world_options(apply)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``diffx postfilter``; a user's mistake is one line on stderr and exit status 2
    (:mod:`diffx._errors`), before any output is written."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.sample_rate_given = any(a.startswith("--sample-rate") for a in argv)
    handlers = {"pairs": _pairs, "gv": _gv, "merge": _merge, "apply": _apply}
    try:
        return handlers[args.command](args)
    except (*USER_ERRORS, KeyError, ImportError) as err:
        return report(f"postfilter {args.command}", err)


if __name__ == "__main__":
    sys.exit(main())
