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

import re
import sys
from pathlib import Path

from diffx import __version__

TRAINING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _demo(argv: list[str]) -> int:
    from diffx._errors import CommandParser, report
    from diffx.demo import MIN_SECONDS

    parser = CommandParser(
        prog="diffx demo", description="run the core effects on the shipped demo audio"
    )
    parser.add_argument(
        "--out", default="outputs/demo", help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=6.0,
        help=f"length of each demo clip in seconds (at least {MIN_SECONDS:g})",
    )
    args = parser.parse_args(argv)
    # Checked here, before the output folder is made.
    if not MIN_SECONDS <= args.seconds < float("inf"):
        return report("demo", f"--seconds must be a number >= {MIN_SECONDS:g}, got {args.seconds}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        return report("demo", f"--out {args.out} is a file, not a folder")
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


SPECIAL_CKPT_PATHS = ("last", "best", "hpc")
"""``--ckpt_path`` values that Lightning resolves itself (``registry:...`` too)."""


def _check_configs(argv: list[str]) -> None:
    """Refuse a ``--config`` file that does not exist or is not YAML, naming it (jsonargparse
    reports a YAML syntax error without the file's name)."""
    import yaml

    from diffx._errors import UserError, one_line

    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            continue
        if not Path(path).is_file():
            raise UserError(f"--config {path}: no such file")
        try:
            yaml.safe_load(Path(path).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            message = f"--config {path} is not a readable YAML file: {one_line(error)}"
            raise UserError(message) from error


def summarize_parser_error(message: str) -> str:
    """One line from jsonargparse's nested error report: the full config key, the class it
    configures, and the innermost complaint, e.g. ``data.init_args.effect (diffx.effects.
    ParametricEQ): Option 'drive' is not accepted``. A one-line message is returned as it is."""
    from diffx._errors import one_line

    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) <= 1:
        return one_line(message)
    keys: list[str] = []
    cls, leaf, given, after_class = None, None, None, False
    for line in lines:
        text = line[2:] if line.startswith("- ") else line
        key = re.fullmatch(r'Parser key "(.+)":', text)
        problem = re.fullmatch(r"Problem with given class_path '(.+)':", text)
        if leaf is not None:
            if given is None and text.startswith("Given value:"):
                given = text.split(":", 1)[1].strip()
            continue
        if key:
            keys += ["init_args", key.group(1)] if after_class else [key.group(1)]
            after_class = False
        elif problem:
            cls, after_class = problem.group(1), True
        elif text.startswith("Subtypes:") and not keys:
            # an error while instantiating: the union's base class tells model from data
            if "LightningDataModule" in text:
                keys.append("data")
            elif "LightningModule" in text:
                keys.append("model")
        elif text.startswith(("Does not validate against", "Subtypes:", "Errors:", "Given value")):
            continue
        elif text != "Expected a <class 'NoneType'>":
            leaf = text
    if leaf is None:
        return one_line(message)
    if cls is None:
        found = re.search(r"class_path='([\w.]+)'", message)
        cls = found.group(1) if found else None
    where = ".".join(keys)
    if cls and (after_class or not where.count(".")):
        where = f"{where} ({cls})" if where else cls
    if given and not given.startswith(("NestedArg(", "Namespace(")) and given not in leaf:
        leaf = f"{leaf} (got {given})"
    return one_line(f"{where}: {leaf}" if where else leaf)


def _build_cli(args: list[str] | None, run: bool = True):
    """The LightningCLI of ``diffx fit/validate/test/predict`` (``run=False``: parse and
    instantiate only, with no subcommand in ``args``).

    A user's mistake (see :mod:`diffx._errors`) is found before anything is written: a parse
    error (unknown key, value of the wrong type) prints one line and exits with status 2; a
    value a class refuses, a missing or damaged ``--ckpt_path``, and files the data module
    cannot use raise :class:`~diffx._errors.UserError` before the run starts (the logger
    makes its folder and event file, and the config is saved, only once the run starts).
    """
    # Imported here so `diffx demo` and `diffx --help` stay fast.
    import warnings

    import pytorch_lightning as pl
    from lightning_fabric.utilities.exceptions import MisconfigurationException
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

    from diffx._errors import USER_ERRORS, UserError, check_checkpoint, one_line

    # The tasks step the optimizer once per TBPTT frame (manual optimization), and their
    # checkpoints are meant to hold the weights after the step; Lightning's warning about
    # exactly that prints a page of sample code on every run.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")

    class OneLineErrorParser(LightningArgumentParser):
        """Parse errors as one line naming the key, not a page of usage and nested unions."""

        def error(self, message: str, ex: Exception | None = None):
            if not self.exit_on_error:
                return super().error(message, ex)
            parser = getattr(ex, "subcommand_parser", None) or self
            prog = parser.prog.replace(" [options]", "")
            sys.stderr.write(
                f"{prog}: error: {summarize_parser_error(message)} (see {prog} --help)\n"
            )
            self.exit(2)

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

    def is_users_mistake(error: BaseException) -> bool:
        # jsonargparse wraps what a class raises in its own ValueError (the cause chain ends
        # at the original): a TypeError or RuntimeError from inside a class is a bug.
        while error.__cause__ is not None:
            error = error.__cause__
        return isinstance(error, (*USER_ERRORS, MisconfigurationException))

    class DiffxCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            # One sample rate per run: the data module's, handed to the task.
            parser.link_arguments("data.init_args.sample_rate", "model.init_args.sample_rate")

        def parse_arguments(self, parser, args) -> None:
            super().parse_arguments(parser, args)
            # Lightning unpickles --ckpt_path right after parsing (for its hyperparameters);
            # a damaged file would fail there with an error that never names it.
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if (
                ckpt_path is not None
                and ckpt_path not in SPECIAL_CKPT_PATHS
                and not str(ckpt_path).startswith("registry:")
            ):
                check_checkpoint(ckpt_path, "--ckpt_path")

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except UserError:
                raise
            except Exception as error:  # a value a class or the Trainer refuses
                if not is_users_mistake(error):
                    raise
                raise UserError(summarize_parser_error(str(error))) from error

        def instantiate_trainer(self, **kwargs):
            # The model and data exist now; the data's files are checked before the Trainer
            # prints its start-up lines. Not with run=False (a model rebuilt from a run's
            # config, as by `diffx stylize`): that does not read the training data.
            if self.subcommand is not None and self.datamodule is not None:
                from diffx.data.checks import check_inputs

                try:
                    check_inputs(self.datamodule)
                except USER_ERRORS as error:
                    name = type(self.datamodule).__name__
                    raise UserError(f"data ({name}): {one_line(error)}") from error
            return super().instantiate_trainer(**kwargs)

        def _before_run(self) -> None:
            """The checks that need the Trainer (its loggers and checkpoint callbacks)."""
            if self.config_init[self.subcommand].get("ckpt_path") == "last":
                self._check_last_checkpoint()

        def _check_last_checkpoint(self) -> None:
            # Lightning's own search for ckpt_path="last" (read only: nothing is created).
            found = set()
            for callback in self.trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint):
                    found |= callback._find_last_checkpoints(self.trainer)
            if found:
                # A damaged file (a full disk, a copy cut short) named here in one line; a kill
                # cannot leave one (writes are atomic: diffx.tasks.checkpoint).
                for path in sorted(found):
                    check_checkpoint(path, "--ckpt_path last")
                return
            where = f"under {self.trainer.log_dir}" if self.trainer.log_dir else "for this run"
            if self.subcommand != "fit":
                raise UserError(
                    f"--ckpt_path last: no last checkpoint {where}; train first (diffx fit) "
                    "or give --ckpt_path PATH"
                )
            # Lightning then warns over two lines and starts from scratch, which is right for
            # a first run that is always started with `--ckpt_path last`: say it once.
            warnings.filterwarnings("ignore", message=r".*ckpt_path=\"last\"\) is set, but")
            if self.trainer.is_global_zero:
                print(f"diffx fit: no last checkpoint {where}; training starts from step 0",
                      file=sys.stderr)  # fmt: skip

        def before_fit(self) -> None:
            self._before_run()

        def before_validate(self) -> None:
            self._before_run()

        def before_test(self) -> None:
            self._before_run()

        def before_predict(self) -> None:
            self._before_run()

    return DiffxCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=ConfigBesideCheckpoints,
        save_config_kwargs={"overwrite": True},
        parser_class=OneLineErrorParser,
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
    from diffx._errors import UserError, report

    try:
        _check_configs(argv[1:])
        # From the shell LightningCLI reads sys.argv itself (its DDP launcher re-runs it).
        _build_cli(None if from_command_line else argv)
    except UserError as error:  # raised before the run starts, so nothing was written
        return report(argv[0], error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
