"""Evaluate post-filters on held-out utterances: no post-filter, the GV post-filter and trained
GAN post-filters, side by side.

    python scripts/postfilter_report.py --postfilter outputs/postfilter/merged.pt \
        --out outputs/postfilter/report

For every trained stream (and ``mgc``), on the voiced frames of the test split of ``--data``
(default: the shipped ``violin_ddsp`` pairs):

- GV ratio in dB (predicted GV / natural GV per dimension, mean over the post-filtered dims:
  ``mgc`` from 2 on, ``bap`` all);
- mel-cepstral distortion in dB (``mgc`` without ``c0``);
- modulation-spectrum distance in dB (RMS difference of the log modulation spectra).

The GV post-filter uses the natural training features' GV with ``--strength``; each GAN
post-filter draws its noise from seed 0 (the smoothed inference noise). ``--postfilter`` may be
given several times (e.g. an ``mgc`` and a ``bap`` post-filter, and their merge). Audio (WORLD
synthesis) and a GV/spectrogram figure per variant go to ``--out``; the table is printed as
Markdown and written to ``--out/report.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from diffx.analysis.acoustic import (
    gv_ratio_db,
    mel_cepstral_distortion_db,
    mgc_to_log_spectrum_db,
    modulation_spectrum_distance_db,
    world_synthesis,
)
from diffx.analysis.plots import plot_postfilter
from diffx.data import PostFilterDataModule
from diffx.nn import GVPostFilter
from diffx.tasks.postfilter import enhance_features
from diffx.tasks.runs import load_postfilter

OFFSETS = {"mgc": 2}


def scores(variant, natural, masks, layout, streams) -> dict[str, float]:
    row = {}
    for stream in streams:
        span = layout.span(stream)
        dims = slice(span.start + OFFSETS.get(stream, 0), span.stop)
        pred = [u[:, dims] for u in variant]
        nat = [u[:, dims] for u in natural]
        row[f"{stream} GV ratio (dB)"] = float(np.mean(gv_ratio_db(pred, nat, masks)))
        row[f"{stream} MS distance (dB)"] = modulation_spectrum_distance_db(pred, nat)
        if stream == "mgc":
            row["MCD (dB)"] = float(
                np.mean(
                    [
                        mel_cepstral_distortion_db(p[:, span], n[:, span], m)
                        for p, n, m in zip(variant, natural, masks)
                    ]
                )
            )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="violin_ddsp", help="pairs folder or shipped set")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument(
        "--postfilter",
        action="append",
        default=[],
        help="postfilter.pt or GANPostFilter checkpoint (repeatable)",
    )
    parser.add_argument("--strength", type=float, default=1.0, help="GV post-filter strength")
    parser.add_argument("--out", default="outputs/postfilter/report")
    args = parser.parse_args()

    data = PostFilterDataModule(args.data)
    data.setup()
    layout, world = data.layout, data.world
    pairs = data.pairs[args.split]
    natural = [p.natural for p in pairs]
    masks = None
    if "vuv" in layout.names:
        masks = [layout.voiced(u) for u in natural]
    streams = [s for s in ("mgc", "bap") if s in layout.names]

    gv_streams = {s: OFFSETS.get(s, 0) for s in streams}
    gv = GVPostFilter(data.natural_global_variance(), layout, gv_streams, args.strength)
    variants = {
        "none": [p.predicted for p in pairs],
        f"GV (strength {args.strength:g})": [
            gv(torch.from_numpy(p.predicted)).numpy() for p in pairs
        ],
    }
    sources = []
    for path in args.postfilter:
        model, _ = load_postfilter(path)
        name = f"GAN {'+'.join(sorted(model.filters))}"
        if name in variants:
            name += f" ({len(sources) + 1})"
        variants[name] = [enhance_features(p.predicted, model, seed=0) for p in pairs]
        sources.append(f"{name}: {path}")

    rows = {name: scores(v, natural, masks, layout, streams) for name, v in variants.items()}
    columns = list(next(iter(rows.values())))
    lines = [
        f"{len(pairs)} {args.split} utterances of {args.data}, voiced frames",
        "",
        "| post-filter | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    lines += [
        f"| {n} | " + " | ".join(f"{r[c]:.2f}" for c in columns) + " |" for n, r in rows.items()
    ]
    lines += [""] + [f"- {source}" for source in sources]
    report = "\n".join(lines)
    print(report)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(report + "\n")
    if world is not None:
        first = {"natural": natural[0]} | {n: v[0] for n, v in variants.items()}
        for i, (name, features) in enumerate(first.items()):
            audio = world_synthesis(layout.split(features), world)
            stem = name.split(" (")[0].replace(" ", "_").replace("+", "_").lower()
            sf.write(out / f"{i}_{stem}.wav", audio, world.sample_rate)
        if "mgc" in layout.names and masks is not None:
            mgc, voiced = layout.span("mgc"), masks[0]
            plot_postfilter(
                natural[0][voiced][:, mgc],
                {n: v[0][voiced][:, mgc] for n, v in variants.items()},
                {n: mgc_to_log_spectrum_db(f[:, mgc], world) for n, f in first.items()},
                world.frame_rate_hz,
                world.sample_rate,
                offset=2,
                path=out / "postfilter.png",
            )
    print(f"audio, figure and report.md in {out}")


if __name__ == "__main__":
    main()
