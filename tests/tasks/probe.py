"""A callback the DDP test adds from the command line: records what each process trained on."""

import json
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
