"""Checkpoints that a kill cannot corrupt, and a resumed run that continues bit for bit.

A Lightning checkpoint holds the weights, the optimizers and the loop counters; a diffx run
resumed with ``--ckpt_path last`` must also continue with the same random numbers and data
order, and must rank and export the checkpoints by scores of their own weights:

* :class:`ResumeState` (every :class:`~diffx.tasks.base.AudioTask` adds it) saves torch's,
  numpy's and Python's random generators in every checkpoint and restores them just before
  the first training step of a resumed run; a validation inside training leaves them as they
  were (it may draw numbers; an uninterrupted and a resumed run validate at the same steps,
  but a resumed run does not repeat the validation that preceded its checkpoint). It also
  makes every checkpoint write atomic (:class:`AtomicCheckpointIO`) and removes the temp
  files of writes that a kill interrupted. The data order is restored by the data module
  (:class:`diffx.data.sampling.ResumableDataModule`).
* :class:`ModelCheckpoint` is Lightning's, made to save after validation: a checkpoint that
  is ranked by a monitored metric is written only right after the validation of its own
  weights (Lightning's ``every_n_train_steps`` writes one before the validation of that step
  and ranks it by the previous validation's score), ``last.ckpt`` is rewritten after every
  validation, and superseded checkpoints are deleted only once ``last.ckpt`` records that.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol

TEMP_MARKER = ".tmp-"
"""Checkpoint writes go to ``.<name>.tmp-<pid>`` beside ``<name>``, then are renamed."""


def temp_path(path: str | os.PathLike) -> Path:
    """The temp file a checkpoint write to ``path`` goes through (hidden, same folder: a
    rename within one file system is atomic, and the name does not end in ``.ckpt``)."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}")


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files that interrupted checkpoint writes left in ``folder`` (those of
    other processes: a run resumes in a new one). Returns the deleted paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.glob(f".*{TEMP_MARKER}*"):
        if path.is_file() and not path.name.endswith(f"{TEMP_MARKER}{os.getpid()}"):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes cannot leave a partial or orphan file.

    The checkpoint is written to :func:`temp_path` in the destination folder, flushed to disk
    and renamed over the destination (``os.replace``): a kill leaves either the old file or
    the new one, plus at most a temp file that the next run removes
    (:func:`remove_stale_temp_files`). Lightning's own write goes through a temp file in the
    system temp folder and ``shutil.move``, which copies across file systems (a kill then
    leaves a truncated checkpoint) and orphans the temp file. Remote paths go to Lightning.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None or not _is_local_file_protocol(str(path)):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path(path)
        try:
            with open(temp, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise


def random_state() -> dict[str, Any]:
    """The states of torch's (CPU and initialised CUDA devices), numpy's and Python's global
    random generators."""
    kind, keys, *rest = np.random.get_state()  # rest: position, has_gauss, cached_gaussian
    state = {
        "torch": torch.get_rng_state(),
        # Tensors and plain numbers only, so that Lightning's weights_only loading accepts it.
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), *rest],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict[str, Any]) -> None:
    """Restore what :func:`random_state` returned (CUDA states only for as many devices as
    both runs have)."""
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


class ResumeState(pl.Callback):
    """Random generators in checkpoints, atomic checkpoint writes, stale temp files removed.

    The state saved is the one the next training step starts from: a checkpoint written
    during a validation (``ModelCheckpoint`` saves on validation end) records the state from
    before that validation, and the validation's draws are undone when it ends, so whether a
    validation ran between two steps (a resumed run does not repeat the one before its
    checkpoint) does not change the training run's random numbers. A resumed run sets the
    saved state at its first training batch, after Lightning has started its loaders.
    """

    CHECKPOINT_KEY = "diffx_random_state"

    def __init__(self) -> None:
        self._before_validation: dict[str, Any] | None = None
        self._to_restore: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        strategy = trainer.strategy
        # Only Lightning's default writer is replaced; a configured plugin is the user's choice.
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Checkpoint folders are known once the checkpoint callbacks have set up.
        if trainer.is_global_zero:
            for callback in trainer.checkpoint_callbacks:
                folder = getattr(callback, "dirpath", None)
                if folder is not None and _is_local_file_protocol(str(folder)):
                    remove_stale_temp_files(folder)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._before_validation = random_state()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Training goes on from the state before the validation. (Lightning calls this hook
        # before ModelCheckpoint's, which it puts last: a checkpoint saved there records the
        # restored state; one saved earlier in the validation, the state kept at its start.)
        if self._before_validation is not None:
            set_random_state(self._before_validation)
            self._before_validation = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._to_restore is not None:
            set_random_state(self._to_restore)
            self._to_restore = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._to_restore is not None:  # saved before the first step of a resumed run
            state = self._to_restore
        elif self._before_validation is not None:
            state = self._before_validation
        else:
            state = random_state()
        checkpoint[self.CHECKPOINT_KEY] = state

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == "fit":
            self._to_restore = checkpoint.get(self.CHECKPOINT_KEY)


class ModelCheckpoint(pl.callbacks.ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` with saves timed and ordered for kill and resume.

    It takes Lightning's arguments; what differs:

    * With ``monitor``, a checkpoint enters the top ``save_top_k`` only at the end of a
      validation, scored by that validation (of its own weights). ``every_n_train_steps``
      and ``train_time_interval`` then only set how often ``last.ckpt`` is written between
      validations, and a save due on a step that is followed by a validation waits for its
      end, so the checkpoint holds the fresh score and the validation counts as done.
    * ``last.ckpt`` (``save_last``) is rewritten after every validation and at the end of
      training, so a resumed run never repeats more than the steps since then. (Lightning
      2.6 rewrites it only when it also saves a top-k checkpoint.)
    * Checkpoints that drop out of the top k are deleted only after the next ``last.ckpt``
      is written, and that checkpoint lists them (``pending_removals``): a run killed in
      between deletes them when it resumes. So a kill never leaves the best checkpoint that
      ``last.ckpt`` names missing, nor an orphan one behind.
    * ``enable_version_counter`` defaults to ``False``: a resumed run that repeats a step
      overwrites that step's checkpoint (atomically) instead of writing ``...-v1.ckpt``.
    """

    def __init__(self, *args: Any, enable_version_counter: bool = False, **kwargs: Any):
        super().__init__(*args, enable_version_counter=enable_version_counter, **kwargs)
        self._pending_removals: list[str] = []
        self._save_after_validation = False

    # -------------------------------------------------------------- when to save
    def _ready(self, trainer: pl.Trainer) -> bool:
        return not (
            bool(trainer.fast_dev_run)
            or trainer.state.fn != "fit"
            or trainer.sanity_checking
        )

    def _due_after_step(self, trainer: pl.Trainer) -> bool:
        every = self._every_n_train_steps
        # A step count that passed a multiple (manual optimization takes several optimizer
        # steps per batch, so global_step may skip over the multiple itself).
        if every >= 1 and trainer.global_step // every > self._last_global_step_saved // every:
            return True
        if self._train_time_interval is not None:
            now = time.monotonic()
            due = now - self._last_time_checked >= self._train_time_interval.total_seconds()
            # Ranks' clocks differ: rank zero decides, so that they all save together.
            if trainer.strategy.broadcast(due):
                self._last_time_checked = now
                return True
        return False

    @staticmethod
    def _validation_follows(trainer: pl.Trainer) -> bool:
        loop = trainer.fit_loop
        return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # The loops are restored by now: a resumed run's checkpoint of this step exists.
        if trainer.global_step > 0:
            self._last_global_step_saved = trainer.global_step
        self._flush_removals(trainer)  # those a kill interrupted, listed in the checkpoint

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self._ready(trainer) or self._last_global_step_saved == trainer.global_step:
            return
        if not self._due_after_step(trainer):
            return
        if self._validation_follows(trainer):
            self._save_after_validation = True
            return
        candidates = self._monitor_candidates(trainer)
        if self.monitor is None:  # "the latest k": no score needed
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
        self._flush_removals(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Only without validation (Lightning then saves at the end of every epoch).
        super().on_train_epoch_end(trainer, pl_module)
        self._flush_removals(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._ready(trainer) or self._should_save_on_train_epoch_end(trainer):
            return
        if self._last_global_step_saved == trainer.global_step:
            return
        candidates = self._monitor_candidates(trainer)
        every_epoch = self._every_n_epochs >= 1 and (
            (trainer.current_epoch + 1) % self._every_n_epochs == 0
        )
        if self.monitor is not None or self._save_after_validation or every_epoch:
            self._save_topk_checkpoint(trainer, candidates)
        self._save_after_validation = False
        self._save_last_checkpoint(trainer, candidates)
        self._flush_removals(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and self._ready(trainer):
            if self._last_global_step_saved != trainer.global_step:
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._flush_removals(trainer)

    # -------------------------------------------------------------- deletions
    def _remove_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # Deferred until a last.ckpt that no longer names the file exists (_flush_removals).
        if filepath not in self._pending_removals:
            self._pending_removals.append(filepath)

    def _flush_removals(self, trainer: pl.Trainer) -> None:
        keep = {self.last_model_path, *self.best_k_models}
        for filepath in self._pending_removals:
            if filepath not in keep:
                trainer.strategy.remove_checkpoint(filepath)
        self._pending_removals = []

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pending_removals": list(self._pending_removals)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if self.dirpath == state_dict.get("dirpath", self.dirpath):
            self._pending_removals = list(state_dict.get("pending_removals", []))

