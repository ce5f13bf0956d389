"""``diffx stylize``: process a recording in the style of a reference with a trained model.

    diffx stylize --input in.wav --reference ref.wav --ckpt model.ckpt --out out.wav

loads a :class:`diffx.tasks.StyleTransfer` checkpoint (its model is rebuilt from the
``config.yaml`` that ``diffx fit`` saved beside the checkpoints, or from ``--config``),
predicts the effect parameters from the input and the reference, prints them in physical
units, and writes the processed input.

Audio handling: both files are read at the model's sample rate (resampled when they differ)
and the output is written at the input's own rate and channel count. Every channel of the
input gets the same parameters (the encoder hears the channels' average). The output is
written as 32-bit float when it exceeds full scale (a compressor's make-up gain can push it
there), with a warning, so nothing is clipped. A silent reference is refused: it has no
style; a silent input is processed (the output is silent too) with a warning. Files shorter
than :data:`MIN_SECONDS` (0.4 s) are refused. Every refusal (a file, the checkpoint, the output
path) is one line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from diffx._errors import USER_ERRORS, UserError, check_checkpoint
from diffx.commands._frontend import CommandParser, check_output_audio, read_user_audio, report
from diffx.tasks.runs import CONFIG_NAME, load_style_model

MIN_SECONDS = 0.4
"""The shortest input and reference: one BS.1770 loudness block (400 ms), which the
loudness stage needs, and several frames of the encoder's STFT (1024 samples)."""


def format_parameters(parameters: list[tuple[str, float, str]]) -> str:
    """A table of ``effect.param  value unit`` lines from ``(name, value, unit)`` triples."""
    width = max(len(name) for name, _, _ in parameters)
    return "\n".join(
        f"  {name:<{width}}  {value:10.4g}{' ' + unit if unit else ''}"
        for name, value, unit in parameters
    )


def stylize(
    input_path: str | Path,
    reference_path: str | Path,
    ckpt: str | Path,
    out_path: str | Path,
    config: str | Path | None = None,
) -> list[tuple[str, float, str]]:
    """Process ``input_path`` like ``reference_path``; write ``out_path``.

    Both files must hold at least :data:`MIN_SECONDS` of audio.

    Raises:
        UserError: a file, the checkpoint or the output path cannot be used (named), checked
            before the model is built and before anything is written.

    Returns:
        ``(name, physical value, unit)`` of every parameter used, in chain order.
    """
    from diffx.functional.resampling import resample
    from diffx.io.audio import save_audio

    # Everything the user named is checked before the model is built (seconds) and before
    # anything is written.
    check_output_audio(out_path)
    # Read once at the file's own rate: the output goes back to it.
    native, input_rate = read_user_audio(input_path, "--input", MIN_SECONDS)
    reference_native, reference_rate = read_user_audio(
        reference_path, "--reference", MIN_SECONDS, mono=True
    )
    if not bool(reference_native.abs().max() > 0):
        raise UserError(f"--reference {reference_path} is silent: it has no style to match")
    check_checkpoint(ckpt, "--ckpt")
    model = load_style_model(ckpt, config)
    rate = model.sample_rate
    x = torch.from_numpy(resample(native.numpy(), input_rate, rate).astype(np.float32))
    reference = torch.from_numpy(
        resample(reference_native.numpy(), reference_rate, rate).astype(np.float32)
    )
    if not bool(x.abs().max() > 0):
        warnings.warn(f"input {str(input_path)!r} is silent; the output will be too", stacklevel=2)
    with torch.no_grad():
        params, correction_db = model.predict(x[None], reference[None])
        # Each channel is processed with the same parameters.
        channels = x.shape[0]
        y = model.chain(x[:, None, :], params.expand(channels, -1))[:, 0, :]
        if correction_db is not None:  # the channels together, at the reference's loudness
            y = model.match_loudness(y[None], reference[None], correction_db)[0]
    physical = model.physical_parameters(params)
    chain = model.chain
    parameters = [
        (name, float(physical[name][0]), spec.unit)
        for name, spec in zip(chain.param_names, chain.param_specs)
    ]
    out = resample(y.double().numpy(), rate, input_rate)
    subtype = None
    peak = float(np.abs(out).max())
    if peak > 1.0:
        warnings.warn(
            f"output peaks at {20 * math.log10(peak):+.1f} dBFS; writing 32-bit float so "
            "nothing is clipped",
            stacklevel=2,
        )
        subtype = "FLOAT"
    save_audio(out_path, out, input_rate, subtype=subtype)
    return parameters


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(
        prog="diffx stylize",
        description="process a recording in the style of a reference with a trained "
        "style-transfer model",
    )
    parser.add_argument("--input", required=True, help="audio file to process")
    parser.add_argument("--reference", required=True, help="audio file whose style to match")
    parser.add_argument("--ckpt", required=True, help="StyleTransfer checkpoint (.ckpt)")
    parser.add_argument("--out", required=True, help="output audio file (.wav, .flac)")
    parser.add_argument(
        "--config", default=None, help=f"training config (default: the {CONFIG_NAME} beside --ckpt)"
    )
    args = parser.parse_args(argv)
    try:
        parameters = stylize(args.input, args.reference, args.ckpt, args.out, args.config)
    except USER_ERRORS as error:
        return report("stylize", error)
    print("estimated parameters:")
    print(format_parameters(parameters))
    print(f"wrote {args.out}")
    return 0
