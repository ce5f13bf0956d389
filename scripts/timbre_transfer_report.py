"""Evaluate a trained DDSP timbre-transfer model: held-out resynthesis and transfer of real audio.

    python scripts/timbre_transfer_report.py \
        --ckpt outputs/timbre_transfer/quickstart/checkpoints/last.ckpt \
        --out outputs/timbre_transfer/report

1. **Resynthesis** of the held-out test phrases of the training data (the data module of the
   ``config.yaml`` beside the checkpoint; clips of the config's length): multi-scale spectral
   loss (the training loss), f0 error in cents and the fraction of frames within 50 cents,
   A-weighted loudness error in dB, on the frames where the recording holds a note. The same
   for an untrained model of the same architecture (seed 0) as the baseline.
2. **Transfer** of real recordings to the trained instrument (default: the shipped speech clip
   and two real guitar clips), with the automatic loudness adjustment and the octave shift
   that ``--pitch-shift auto`` picks: the f0 of the output against the input's f0 times the
   shift, on the input's note frames.

f0 is measured with CREPE ``--eval-crepe`` (default ``full``, the paper's tracker) on input and
output alike, whatever tracker the model was trained with; the model itself is driven by
features from its own tracker, as ``diffx timbre`` does. Audio and figures go to ``--out``;
the tables are printed as Markdown and written to ``--out/report.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from diffx.analysis.features import (
    a_weighted_loudness_db,
    cents,
    crepe_pitch,
    detect_notes,
    resynthesis_errors,
)
from diffx.analysis.plots import plot_timbre_transfer
from diffx.data import TimbreDataModule
from diffx.data.timbre_transfer import FixedClips
from diffx.io.audio import demo_audio_files, load_audio, save_audio
from diffx.tasks import TimbreTransfer
from diffx.tasks.runs import load_timbre_model
from diffx.tasks.timbre_transfer import summarize_errors, transfer_timbre

TRANSFER_CLIPS = ("voice", "guitar_e_slide", "guitar_harmonics")


def data_module(ckpt: Path, model: TimbreTransfer) -> TimbreDataModule:
    """The checkpoint's data module (from its config), features from the model's tracker."""
    config = yaml.safe_load((ckpt.parent / "config.yaml").read_text())
    args = dict(config["data"]["init_args"])
    args.update(crepe_model=model.crepe_model, sample_rate=model.sample_rate)
    return TimbreDataModule(**args)


def resynthesis(model: TimbreTransfer, clips: FixedClips, eval_crepe: str) -> dict[str, float]:
    """:func:`summarize_errors` over ``clips``, f0 and note frames from ``eval_crepe``."""
    sums: dict[str, float] = {}
    for i in tqdm(range(len(clips)), desc="resynthesis", unit="clip", leave=False):
        item = clips[i]
        with torch.no_grad():
            out = model(item["f0_hz"][None], item["loudness_db"][None], noise_seed=0)["audio"]
        f0_ref, conf_ref = crepe_pitch(item["audio"][0], model.sample_rate,
                                       model.frame_rate_hz, model=eval_crepe)  # fmt: skip
        batch_sums = resynthesis_errors(
            out, model.sample_rate, model.frame_rate_hz, f0_ref[None], conf_ref[None],
            item["loudness_db"][None], crepe_model=eval_crepe,
        )
        batch_sums["spectral_loss_sum"] = float(model.spectral_loss(out, item["audio"][None]))
        batch_sums["clips"] = 1.0
        for key, value in batch_sums.items():
            sums[key] = sums.get(key, 0.0) + value
    return summarize_errors(sums)


def transfer(model: TimbreTransfer, name: str, eval_crepe: str, out_dir: Path) -> dict:
    """Transfer one shipped clip; pitch accuracy on the input's note frames."""
    audio, _ = load_audio(demo_audio_files()[name], sample_rate=model.sample_rate, mono=True)
    result = transfer_timbre(model, audio[0], pitch_shift_octaves="auto")
    f0_in, conf_in = crepe_pitch(audio[0], model.sample_rate, model.frame_rate_hz,
                                 model=eval_crepe)  # fmt: skip
    output = torch.from_numpy(result.audio)
    f0_out, _ = crepe_pitch(output, model.sample_rate, model.frame_rate_hz, model=eval_crepe)
    voiced, _ = detect_notes(result.loudness_db, conf_in.numpy())
    expected = f0_in.double() * 2.0**result.pitch_shift_octaves
    error = cents(f0_out.double(), expected).abs().numpy()[voiced]
    save_audio(out_dir / f"{name}_input.wav", audio, model.sample_rate)
    save_audio(out_dir / f"{name}_transfer.wav", result.audio[None], model.sample_rate,
               subtype="FLOAT")  # fmt: skip
    plot_timbre_transfer(
        audio[0].numpy(), result.audio, model.sample_rate, model.frame_rate_hz,
        result.f0_control_hz, result.loudness_control_db, f0_out.numpy(),
        a_weighted_loudness_db(output, model.sample_rate, model.frame_rate_hz).numpy(),
        titles=(f"{name} (input)", "transfer"), path=out_dir / f"{name}_transfer.png",
    )
    return {
        "clip": name,
        "seconds": audio.shape[-1] / model.sample_rate,
        "voiced_frames": int(voiced.sum()),
        "octaves": result.pitch_shift_octaves,
        "median_cents": float(np.median(error)) if error.size else float("nan"),
        "mean_cents": float(error.mean()) if error.size else float("nan"),
        "within_50": float((error <= 50).mean()) if error.size else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="TimbreTransfer checkpoint")
    parser.add_argument("--out", default="outputs/timbre_transfer/report", help="output folder")
    parser.add_argument("--eval-crepe", default="full", choices=("full", "tiny"))
    parser.add_argument("--clips", nargs="*", default=list(TRANSFER_CLIPS),
                        help="shipped clips to transfer (default: %(default)s)")  # fmt: skip
    args = parser.parse_args(argv)
    started = time.time()
    ckpt = Path(args.ckpt)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    trained = load_timbre_model(ckpt)
    torch.manual_seed(0)
    untrained = TimbreTransfer(**dict(trained.hparams)).eval()
    data = data_module(ckpt, trained)
    data.setup()
    clips = FixedClips(data.splits["test"], data.clip_frames, data.hop)

    lines = [
        f"Checkpoint `{ckpt}`; f0 measured with CREPE `{args.eval_crepe}`.",
        "",
        f"Resynthesis of the {len(clips)} held-out test clips "
        f"({data.clip_frames / data.frame_rate_hz:g} s each):",
        "",
        "| model | spectral loss | f0 error (cents) | f0 within 50 cents | loudness error (dB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, model in (("untrained (seed 0)", untrained), ("trained", trained)):
        m = resynthesis(model, clips, args.eval_crepe)
        lines.append(
            f"| {name} | {m['spectral_loss']:.3f} | {m.get('f0_error_cents', float('nan')):.1f} "
            f"| {100 * m.get('f0_within_50_cents', float('nan')):.1f} % "
            f"| {m['loudness_error_db']:.2f} |"
        )
    lines += [
        "",
        "Transfer of real recordings (auto loudness adjustment, auto octave shift):",
        "",
        "| clip | seconds | note frames | shift (octaves) | median error (cents) | "
        "mean error (cents) | within 50 cents |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in tqdm(args.clips, desc="transfer", unit="clip"):
        r = transfer(trained, name, args.eval_crepe, out_dir)
        lines.append(
            f"| {r['clip']} | {r['seconds']:.1f} | {r['voiced_frames']} | {r['octaves']:+g} | "
            f"{r['median_cents']:.1f} | {r['mean_cents']:.1f} | {100 * r['within_50']:.1f} % |"
        )
    lines += ["", f"({time.time() - started:.0f} s)"]
    report = "\n".join(lines)
    print(report)
    (out_dir / "report.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
