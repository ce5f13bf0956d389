"""Callbacks the run tests add from the command line: what each process trained on, kills."""

import json
import os
import signal
from pathlib import Path

import pytorch_lightning as pl
import torch


class ShardProbe(pl.Callback):
    """Write ``rank<r>.json`` with the training item indices this process saw and its weights."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.indices: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.indices.extend(int(i) for i in batch["index"])

    def on_train_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        weights = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
        record = {"rank": trainer.global_rank, "indices": self.indices, "weights": weights.tolist()}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class KillAt(pl.Callback):
    """SIGKILL this process at training step ``step``: right after that step
    (``where="step"``), or in the middle of writing the first checkpoint at or after it
    (``where="write"``: the checkpoint then holds an object whose pickling kills, so the temp
    file is open and partly written)."""

    def __init__(self, step: int, where: str = "step"):
        if where not in ("step", "write"):
            raise ValueError(f"where must be 'step' or 'write', got {where!r}")
        self.step, self.where = int(step), where

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.where == "step" and trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self.where == "write" and trainer.global_step >= self.step:
            checkpoint["kill"] = _KillOnPickle()


class _KillOnPickle:
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)


class MetricProbe(pl.Callback):
    """Append ``{"step": global step, metric: value, ...}`` as a JSON line to ``path`` after
    every validation inside training (rank zero; not the sanity check)."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        record = {"step": trainer.global_step}
        record.update({k: float(v) for k, v in trainer.callback_metrics.items() if "/" in k})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")
