"""The ``diffx`` console script.

Subcommands:
    fit, validate, test, predict   train and evaluate a task from YAML (LightningCLI), e.g.
                                   ``diffx fit --config configs/antialias/quickstart_lstm.yaml``;
                                   ``diffx fit --config ... --ckpt_path last`` resumes a run.
    demo                           run the core effects on the shipped demo audio; write audio
                                   files and plots.
    align                          phase-align a dry recording to a processed one with allpass
                                   filters (``diffx align --dry d.wav --wet w.wav --out a.wav``).
    stylize                        process a recording in the style of a reference with a
                                   trained style-transfer model (``diffx stylize --input in.wav
                                   --reference ref.wav --ckpt model.ckpt --out out.wav``).

Every task config names a model (``model.class_path``: a LightningModule in
:mod:`diffx.tasks`) and a data module (``data.class_path``: :mod:`diffx.data`). The data
module's ``sample_rate`` is linked to the model's, so it is written once. Unknown keys are
errors that name the key. The config is saved beside the checkpoints of every run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffx import __version__

TRAINING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="diffx demo", description="run the core effects on the shipped demo audio"
    )
    parser.add_argument(
        "--out", default="outputs/demo", help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--seconds", type=float, default=6.0, help="length of each demo clip in seconds"
    )
    args = parser.parse_args(argv)
    from diffx.demo import run_demo

    run_demo(args.out, seconds=args.seconds)
    return 0


def _usage() -> str:
    return (
        f"diffx {__version__}\n\n"
        "usage: diffx {fit,validate,test,predict} --config CONFIG.yaml [--key value ...]\n"
        "       diffx demo [--out DIR] [--seconds S]\n"
        "       diffx align --dry DRY.wav --wet WET.wav --out ALIGNED.wav [options]\n"
        "       diffx stylize --input IN.wav --reference REF.wav --ckpt MODEL.ckpt "
        "--out OUT.wav\n"
        "       diffx timbre --input IN.wav --ckpt MODEL.ckpt --out OUT.wav "
        "[--pitch-shift OCTAVES|auto] [--loudness-shift DB]\n"
        "       diffx postfilter {pairs,gv,merge,apply} ... (see diffx postfilter --help)\n\n"
        "  fit       train a task (add --ckpt_path last to resume)\n"
        "  validate  run the validation metrics of a task on a checkpoint (--ckpt_path)\n"
        "  test      run the test metrics\n"
        "  predict   process audio with a trained task\n"
        "  demo      run the core effects on the shipped demo audio\n"
        "  align     phase-align a dry recording to a processed one (allpass filters)\n"
        "  stylize   process a recording in the style of a reference (trained model)\n"
        "  timbre    play a recording's melody on a trained DDSP instrument\n"
        "  postfilter  make feature pairs, GV statistics; merge and apply post-filters\n\n"
        "`diffx fit --help` lists every option; configs live in configs/<task>/."
    )


def _build_cli(args: list[str] | None, run: bool = True):
    # Imported here so `diffx demo` and `diffx --help` stay fast.
    import warnings

    import pytorch_lightning as pl
    from pytorch_lightning.cli import LightningCLI, SaveConfigCallback

    # The tasks step the optimizer once per TBPTT frame (manual optimization), and their
    # checkpoints are meant to hold the weights after the step; Lightning's warning about
    # exactly that prints a page of sample code on every run.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")

    class ConfigBesideCheckpoints(SaveConfigCallback):
        """Save the run's config in the log folder and in the checkpoint folder."""

        def on_train_start(self, trainer, pl_module) -> None:
            # The checkpoint folder is only known once ModelCheckpoint has set up.
            callback = trainer.checkpoint_callback
            if callback is None or callback.dirpath is None or not trainer.is_global_zero:
                return
            folder = Path(callback.dirpath)
            folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(
                self.config, str(folder / self.config_filename), skip_none=False, overwrite=True
            )

    class DiffxCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            # One sample rate per run: the data module's, handed to the task.
            parser.link_arguments("data.init_args.sample_rate", "model.init_args.sample_rate")

    return DiffxCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=ConfigBesideCheckpoints,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
        parser_kwargs={"prog": "diffx"},
    )


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"diffx {__version__}")
        return 0
    if argv[0] == "demo":
        return _demo(argv[1:])
    if argv[0] == "align":
        from diffx.align import main as align_main

        return align_main(argv[1:])
    if argv[0] == "stylize":
        from diffx.stylize import main as stylize_main

        return stylize_main(argv[1:])
    if argv[0] == "postfilter":
        from diffx.postfilter import main as postfilter_main

        return postfilter_main(argv[1:])
    if argv[0] == "timbre":
        from diffx.timbre import main as timbre_main

        return timbre_main(argv[1:])
    if argv[0] not in TRAINING_SUBCOMMANDS:
        print(f"diffx: unknown subcommand {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    # From the shell LightningCLI reads sys.argv itself (its DDP launcher re-runs it).
    _build_cli(None if from_command_line else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
