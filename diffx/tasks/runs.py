"""Building a task from its config, and loading trained runs and models from their files.

A *run* is what ``diffx fit`` leaves in its folder: the checkpoints and the ``config.yaml``
saved beside them. :class:`TaskCLI` is the part of the ``diffx`` command that turns a config
into a task and its data module (the same parser, the same data-to-model links), so a model is
rebuilt here exactly as it was trained; the command front end (:mod:`diffx.commands.train`)
adds its error reporting and run checks on top. The loaders below are what the commands,
scripts and notebooks use to get a trained model back.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.cli import LightningCLI

from diffx._errors import check_checkpoint, one_line
from diffx.analysis.acoustic import WorldSettings
from diffx.nn.postfilter import MultiStreamPostFilter
from diffx.tasks.links import link_data_to_model
from diffx.tasks.postfilter import GANPostFilter
from diffx.tasks.style_transfer import StyleTransfer
from diffx.tasks.timbre_transfer import TimbreTransfer


class TaskCLI(LightningCLI):
    """LightningCLI over every task in :mod:`diffx.tasks` and data module in :mod:`diffx.data`
    (``model.class_path`` / ``data.class_path``), with the links that hand values from the data
    module to the task, so each is written once in a config."""

    def add_arguments_to_parser(self, parser) -> None:
        link_data_to_model(parser)  # what the task takes from its data: diffx.tasks.links


TASK_CLI_KWARGS = dict(
    model_class=pl.LightningModule,
    datamodule_class=pl.LightningDataModule,
    subclass_mode_model=True,
    subclass_mode_data=True,
    auto_configure_optimizers=False,
)
"""The keyword arguments every :class:`TaskCLI` of diffx is built with (the tasks configure
their own optimizers)."""


def summarize_parser_error(message: str) -> str:
    """One line from jsonargparse's nested error report: the full config key, the class it
    configures, and the innermost complaint, e.g. ``data.init_args.effect (diffx.effects.
    ParametricEQ): Option 'drive' is not accepted``. A one-line message is returned as it is."""
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


CONFIG_NAME = "config.yaml"
"""The file ``diffx fit`` saves beside a run's checkpoints: the run's whole config."""


CONFIG_SECTIONS = ("model", "data", "trainer", "seed_everything")
"""The sections of a config that build a run; a config saved by ``diffx fit`` also holds the
subcommand's own keys (``ckpt_path``, ...), which are not needed to rebuild it."""


def find_config(ckpt: str | Path) -> Path:
    """The ``config.yaml`` that ``diffx fit`` saved beside ``ckpt`` (or one folder up).

    Raises:
        ValueError: none there.
    """
    ckpt = Path(ckpt)
    for folder in (ckpt.parent, ckpt.parent.parent):
        if (folder / CONFIG_NAME).is_file():
            return folder / CONFIG_NAME
    raise ValueError(
        f"no {CONFIG_NAME} beside checkpoint {str(ckpt)!r} or in its parent folder; pass the "
        "training config with --config"
    )


def build_from_config(config: str | Path, overrides: list[str] | None = None):
    """The task and data module a config describes, built as ``diffx fit`` builds them (the
    same parser and links), without a logger or callbacks, nothing trained, nothing written.

    Args:
        config: a training config (``configs/<task>/*.yaml``) or a run's ``config.yaml``; the
            files it refers to are found relative to its own folder.
        overrides: ``--key value`` arguments applied on top, as on the command line.

    Returns:
        ``(model, datamodule)``; the data module is not set up.

    Raises:
        ValueError: the config is missing, not YAML, not a diffx training config, or a key or
            value in it is refused (the message names the key, on one line).
    """
    config = Path(config)
    if not config.is_file():
        raise ValueError(f"config {str(config)!r} does not exist")
    try:
        spec = yaml.safe_load(config.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read config {str(config)!r}: {one_line(error)}") from error
    if not isinstance(spec, dict) or "model" not in spec:
        raise ValueError(f"{str(config)!r} is not a diffx training config (no model section)")
    # Dotted keys (trainer.max_steps) and included files (config: ...) stay.
    spec = {k: v for k, v in spec.items() if k.split(".")[0] in (*CONFIG_SECTIONS, "config")}
    # Written beside the original, so that the files it names relative to its folder are
    # found (a hidden temporary name, removed at once); in the temporary folder if that
    # folder is read-only.
    try:
        file = tempfile.NamedTemporaryFile(
            "w", suffix=".yaml", prefix=".diffx-", dir=config.parent, delete=False
        )
    except OSError:
        file = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    with file:
        yaml.safe_dump(spec, file)
        clean = Path(file.name)
    args = ["--config", str(clean), "--trainer.logger=false", "--trainer.callbacks=null"]
    try:
        cli = TaskCLI(
            **TASK_CLI_KWARGS,
            args=[*args, *(overrides or [])],
            run=False,
            parser_kwargs={"exit_on_error": False},
        )
    except (argparse.ArgumentError, ValueError, FileNotFoundError) as error:
        # jsonargparse's parse errors (an unknown key, a value of the wrong type, a missing
        # included file), and what a class refuses when it is built (the library's
        # ValueError); another error from inside a class is a bug and keeps its traceback.
        message = summarize_parser_error(str(error)).replace(str(clean), str(config))
        raise ValueError(f"config {str(config)!r}: {message}") from error
    finally:
        clean.unlink(missing_ok=True)
    return cli.model, cli.datamodule


def load_run(ckpt: str | Path, config: str | Path | None = None, task: type | None = None):
    """A trained task (eval mode, on the CPU) and its data module (not set up), rebuilt from its
    config and filled with a checkpoint's weights.

    Args:
        ckpt: a checkpoint of ``diffx fit`` (``last.ckpt``, ``best-*.ckpt``).
        config: the training config; default: the ``config.yaml`` beside ``ckpt``.
        task: the task class the run must be (e.g. :class:`~diffx.tasks.StyleTransfer`).

    Raises:
        UserError: ``ckpt`` missing, empty, truncated or not a checkpoint (named).
        ValueError: the config is missing or refused, it configures another task than
            ``task``, or the checkpoint's weights do not fit the model.
    """
    ckpt = check_checkpoint(ckpt, "checkpoint")
    config = Path(config) if config is not None else find_config(ckpt)
    model, datamodule = build_from_config(config)
    if task is not None and not isinstance(model, task):
        raise ValueError(
            f"{str(config)!r} configures {type(model).__name__}, not a {task.__name__} model"
        )
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
        model.load_state_dict(state)
    except Exception as error:  # noqa: BLE001 - report any unreadable checkpoint by name
        raise ValueError(f"cannot read checkpoint {str(ckpt)!r}: {one_line(error)}") from error
    return model.eval(), datamodule


def load_style_run(ckpt: str | Path, config: str | Path | None = None):
    """A trained :class:`~diffx.tasks.StyleTransfer` (eval mode) and its data module (not set
    up) from a checkpoint; see :func:`load_run`."""
    return load_run(ckpt, config, StyleTransfer)


def load_style_model(ckpt: str | Path, config: str | Path | None = None):
    """A trained :class:`~diffx.tasks.StyleTransfer` from a checkpoint, in eval mode; see
    :func:`load_run`."""
    return load_style_run(ckpt, config)[0]


def load_timbre_model(ckpt: str | Path, option: str = "--ckpt"):
    """A trained :class:`~diffx.tasks.TimbreTransfer` from a checkpoint, on the CPU, in eval mode.

    Raises:
        UserError: no such file, or not a checkpoint (empty, truncated, another kind of file).
        ValueError: a checkpoint, but not a timbre-transfer one.
    """
    path = check_checkpoint(ckpt, option)  # missing, empty, truncated: named, not unpickled
    try:
        model = TimbreTransfer.load_from_checkpoint(path, map_location="cpu")
    except (KeyError, RuntimeError, TypeError, ValueError, EOFError) as error:
        raise ValueError(
            f"{path} is not a TimbreTransfer checkpoint ({type(error).__name__}: {error})"
        ) from error
    return model.eval()


def load_postfilter(
    path: str | Path, option: str = "--postfilter"
) -> tuple[MultiStreamPostFilter, WorldSettings | None]:
    """A trained post-filter from ``postfilter.pt`` (export or merge) or a ``GANPostFilter``
    Lightning checkpoint, in eval mode, with its WORLD settings (``None`` if not WORLD's).

    Raises:
        UserError: a missing file or one that is not a checkpoint (named with ``option``).
        ValueError: a checkpoint, but not a post-filter.
    """
    path = check_checkpoint(path, option)  # missing, empty, truncated: named, not unpickled
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for a damaged file
        raise ValueError(
            f"{path}: not a readable post-filter ({type(err).__name__}: {err})"
        ) from err
    if isinstance(state, dict) and state.get("format") == "diffx-postfilter":
        model = MultiStreamPostFilter.from_state(state)
        world = WorldSettings(**state["world"]) if state.get("world") else None
    elif isinstance(state, dict) and "state_dict" in state and "hyper_parameters" in state:
        try:
            task = GANPostFilter.load_from_checkpoint(path, map_location="cpu")
        except (TypeError, KeyError, RuntimeError) as err:
            raise ValueError(f"{path}: not a GANPostFilter checkpoint ({err})") from err
        model, world = task.postfilter, task.world
    else:
        raise ValueError(f"{path}: neither a postfilter.pt nor a GANPostFilter checkpoint")
    return model.eval(), world


def save_postfilter(
    model: MultiStreamPostFilter, world: WorldSettings | None, path: str | Path
) -> Path:
    """Write ``model`` and its WORLD settings as a ``postfilter.pt`` that :func:`load_postfilter`
    reads (parent folders are made); returns the path."""
    state = model.state()
    state["world"] = world.to_dict() if world is not None else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
