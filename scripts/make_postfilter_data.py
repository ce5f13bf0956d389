"""Render the shipped post-filter pair set ``violin_ddsp``: a DDSP timbre-transfer model's
resynthesis of every shipped violin phrase (``diffx/assets/timbre/violin``), written to
``diffx/assets/postfilter/violin_ddsp`` under the same file names.

The model is the timbre-transfer quickstart, trained with::

    diffx fit --config configs/timbre_transfer/quickstart.yaml

and the resynthesis is driven by each phrase's own f0 and loudness (no pitch shift, no loudness
adjustment, noise seed 0), so prediction and recording are aligned frame by frame. The model
saw the ``train_*`` phrases while training, as an acoustic model sees its training data
before NNSVS makes its post-filter inputs; ``valid_*`` and ``test_*`` are held out.

    python scripts/make_postfilter_data.py \
        --ckpt outputs/timbre_transfer/quickstart/checkpoints/best-step=700.ckpt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from diffx.data.postfilter import POSTFILTER_ASSETS, TIMBRE_ASSETS
from diffx.io.audio import load_audio
from diffx.tasks.runs import load_timbre_model
from diffx.tasks.timbre_transfer import transfer_timbre


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a TimbreTransfer checkpoint (violin)")
    parser.add_argument("--instrument", default="violin")
    parser.add_argument("--out", default=str(POSTFILTER_ASSETS / "violin_ddsp"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_timbre_model(args.ckpt)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = sorted((TIMBRE_ASSETS / args.instrument).glob("*.flac"))
    for path in tqdm(files, desc="resynthesis", unit="phrase"):
        audio, _ = load_audio(path, model.sample_rate, mono=True)
        result = transfer_timbre(model, audio[0], auto_adjust=False, noise_seed=0)
        peak = float(np.abs(result.audio).max())
        if peak > 1.0:
            raise RuntimeError(f"{path.name}: resynthesis peaks at {peak:.2f} (> full scale)")
        sf.write(out / path.name, result.audio, model.sample_rate, subtype="PCM_16")
    print(f"wrote {len(files)} files to {out}")


if __name__ == "__main__":
    main()
