"""``diffx fit``, ``validate``, ``test``, ``predict``: train and evaluate a task from YAML.

    diffx fit --config configs/style_transfer/quickstart.yaml [--key value ...]
    diffx fit --config ... --ckpt_path last        # resume the run where it stopped
    diffx test --config ... --ckpt_path outputs/<task>/<run>/checkpoints/last.ckpt

Every task config names a model (``model.class_path``: a LightningModule in
:mod:`diffx.tasks`) and a data module (``data.class_path``: :mod:`diffx.data`); the values the
task takes from its data (the sample rate, ...) are linked (:class:`diffx.tasks.runs.TaskCLI`),
so each is written once. Unknown keys are errors that name the key. The config is saved beside
the checkpoints of every run.
"""

from __future__ import annotations

import sys
from pathlib import Path

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


def build_cli(args: list[str] | None, run: bool = True):
    """The LightningCLI of ``diffx fit/validate/test/predict`` (``run=False``: parse and
    instantiate only, with no subcommand in ``args``).

    A user's mistake (see :mod:`diffx.commands._frontend`) is found before anything is
    written: a parse error (unknown key, value of the wrong type) prints one line and exits
    with status 2; a
    value a class refuses, a missing or damaged ``--ckpt_path``, and files the data module
    cannot use raise :class:`~diffx._errors.UserError` before the run starts (the logger
    makes its folder and event file, and the config is saved, only once the run starts).
    """
    # Imported here so `diffx demo` and `diffx --help` stay fast.
    import warnings

    from lightning_fabric.utilities.exceptions import MisconfigurationException
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.cli import LightningArgumentParser, SaveConfigCallback

    from diffx._errors import USER_ERRORS, UserError, check_checkpoint, one_line
    from diffx.tasks.runs import TASK_CLI_KWARGS, TaskCLI, summarize_parser_error

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

    class DiffxCLI(TaskCLI):
        """The task CLI (links and all) with the front end's checks and one-line errors."""

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
        **TASK_CLI_KWARGS,
        save_config_callback=ConfigBesideCheckpoints,
        save_config_kwargs={"overwrite": True},
        parser_class=OneLineErrorParser,
        args=args,
        run=run,
        parser_kwargs={"prog": "diffx"},
    )


def main(argv: list[str], from_command_line: bool = False) -> int:
    """Run ``diffx <subcommand> ...`` (``argv[0]``: ``fit``, ``validate``, ``test`` or
    ``predict``); returns the exit status. From the shell (``from_command_line``)
    LightningCLI reads ``sys.argv`` itself, which its DDP launcher runs again in every
    process."""
    from diffx._errors import UserError
    from diffx.commands._frontend import report

    try:
        _check_configs(argv[1:])
        build_cli(None if from_command_line else argv)
    except UserError as error:  # raised before the run starts, so nothing was written
        return report(argv[0], error)
    return 0
