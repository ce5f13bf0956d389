"""Data order that survives a kill and a resume, and evaluation that is exact under DDP.

Every diffx data module derives from :class:`ResumableDataModule` and builds its loaders with
:meth:`ResumableDataModule.train_loader` and :meth:`ResumableDataModule.eval_loader`:

* The training order is a function of ``(seed, epoch)`` only (:class:`EpochSampler`), never of
  torch's global generator, and the data module's ``state_dict`` (saved in every Lightning
  checkpoint) records how far into the epoch training got. A run resumed with
  ``--ckpt_path`` therefore sees exactly the batches the uninterrupted run would have seen,
  even when it was killed in the middle of an epoch. (Lightning restores its loop counters
  but starts a fresh loader iterator, which would replay the epoch's first batches in a new
  order.) Datasets that draw new random items every epoch have a ``set_epoch(epoch)`` method
  and derive their draws from ``(seed, epoch, index)``; the sampler forwards the epoch to
  them.
* Under DDP every process trains on its own equal share of each epoch, as with
  ``DistributedSampler``; validation and test items are split without padding
  (:class:`EvalSampler`: process ``r`` of ``W`` takes items ``r, r + W, ...``), so no item is
  counted twice and a metric logged with ``sync_dist=True`` (a sum and a count reduced over
  processes) is the exact mean over the held-out set.
* Every loader has its own ``torch.Generator``, so starting an iterator does not draw from
  the global generator: the training run's random stream does not depend on when loaders
  are (re)started, which differs between an uninterrupted and a resumed run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sized
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

LOADER_SEED = 0x5EED
"""Seed of the loaders' own generators (they only seed worker processes; no diffx dataset
uses the worker seed, since its draws come from ``(seed, epoch, index)``)."""


def process_group() -> tuple[int, int]:
    """``(world size, rank)`` of the running ``torch.distributed`` group, ``(1, 0)`` without."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def global_seed() -> int:
    """The run's seed (``seed_everything`` exports it as ``PL_GLOBAL_SEED``; 0 when unset)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class EpochSampler(DistributedSampler):
    """This process's share of one training epoch, in an order fixed by ``(seed, epoch)``.

    The order is ``DistributedSampler``'s (a permutation from a generator seeded with
    ``seed + epoch``, split over processes as ``rank::num_replicas``, padded with repeats or
    truncated with ``drop_last`` so that every process gets the same count and the processes
    step together), also with one process. :meth:`resume` makes the next iteration start
    part-way into an epoch.

    Args:
        dataset: the map-style dataset; when it has ``set_epoch``, :meth:`set_epoch` calls it.
        shuffle: permute every epoch (else ``0, 1, 2, ...``).
        seed: base seed of the permutations.
        drop_last: when the dataset does not split evenly, drop its tail rather than pad.
        num_replicas, rank: the process group (default: the running one, else ``1, 0``).
    """

    def __init__(
        self,
        dataset: Sized,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        world, own_rank = process_group()
        super().__init__(
            dataset,
            num_replicas=world if num_replicas is None else num_replicas,
            rank=own_rank if rank is None else rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (Lightning calls it at every epoch start); a pending
        :meth:`resume` position is kept only when it is for this epoch."""
        if int(epoch) != self.epoch:
            self._skip = 0
        super().set_epoch(int(epoch))
        set_dataset_epoch = getattr(self.dataset, "set_epoch", None)
        if callable(set_dataset_epoch):
            set_dataset_epoch(int(epoch))

    def resume(self, epoch: int, consumed: int) -> None:
        """Let the next iteration be epoch ``epoch`` without its first ``consumed`` items (of
        this process's share)."""
        self.set_epoch(epoch)
        self._skip = max(int(consumed), 0)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        # The skip applies to one iteration only: the rest of the epoch that was interrupted.
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])


class EvalSampler(DistributedSampler):
    """Process ``rank``'s share of an evaluation set, in order, without padding.

    Process ``r`` of ``W`` takes items ``r, r + W, r + 2W, ...``: the shares are disjoint,
    together cover every item once, and may differ in length by one (Lightning's
    ``DistributedSampler`` would pad them to equal length with repeated items, which biases
    the metrics). It derives from ``DistributedSampler`` only so that Lightning keeps it
    rather than wrapping the loader in its own.

    Args:
        dataset: the evaluation items; at least one per process (or none at all).
        num_replicas, rank: the process group (default: the running one, else ``1, 0``).

    Raises:
        ValueError: the set has fewer items than there are processes.
    """

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None):
        world, own_rank = process_group()
        super().__init__(
            dataset,
            num_replicas=world if num_replicas is None else num_replicas,
            rank=own_rank if rank is None else rank,
            shuffle=False,
        )
        if 0 < len(self.dataset) < self.num_replicas:
            # A process without an item would skip the evaluation that the others run, and
            # their collectives would wait for it forever (Lightning stops with a traceback).
            raise ValueError(
                f"the evaluation set has {len(self.dataset)} item(s), fewer than the "
                f"{self.num_replicas} DDP processes, and every process needs one: give more "
                "validation/test audio, shorter evaluation segments, or fewer devices"
            )
        self.num_samples = len(range(self.rank, len(self.dataset), self.num_replicas))
        self.total_size = len(self.dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class ResumableDataModule(pl.LightningDataModule):
    """A ``LightningDataModule`` whose training data order is restored on resume.

    Subclasses build their training loader with :meth:`train_loader` and their validation
    and test loaders with :meth:`eval_loader`. The position in the training epoch goes into
    every checkpoint through :meth:`state_dict` (Lightning saves a data module's state) and
    is handed to the next training loader by :meth:`load_state_dict`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._train_sampler: EpochSampler | None = None
        self._train_batch_size = 1
        self._resume_position: tuple[int, int] | None = None

    def train_loader(
        self,
        dataset: Any,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int | None = None,
        num_workers: int = 0,
        **kwargs: Any,
    ) -> DataLoader:
        """A training ``DataLoader`` over ``dataset`` with an :class:`EpochSampler`.

        Args:
            dataset: map-style dataset.
            batch_size: items per batch (per process under DDP).
            shuffle: permute every epoch.
            drop_last: drop a last, incomplete batch (and, under DDP, the items that do not
                split evenly over the processes).
            seed: seed of the order (default: the run's, :func:`global_seed`).
            num_workers: loader worker processes. Workers persist across epochs unless the
                dataset has ``set_epoch`` (a persistent worker would keep its copy's epoch).
            kwargs: further ``DataLoader`` arguments (``collate_fn``, ``pin_memory``, ...).
        """
        sampler = EpochSampler(
            dataset,
            shuffle=shuffle,
            seed=global_seed() if seed is None else int(seed),
            drop_last=drop_last,
        )
        if self._resume_position is not None:
            epoch, batches = self._resume_position
            sampler.resume(epoch, batches * batch_size)
            self._resume_position = None
        self._train_sampler, self._train_batch_size = sampler, int(batch_size)
        persistent = num_workers > 0 and not callable(getattr(dataset, "set_epoch", None))
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=num_workers,
            persistent_workers=persistent,
            generator=torch.Generator().manual_seed(LOADER_SEED),
            **kwargs,
        )

    def eval_loader(self, dataset: Any, batch_size: int | None = 1, **kwargs: Any) -> DataLoader:
        """A validation/test ``DataLoader`` over ``dataset`` with an :class:`EvalSampler`
        (``batch_size=None`` when the items are whole batches already)."""
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=EvalSampler(dataset),
            generator=torch.Generator().manual_seed(LOADER_SEED),
            **kwargs,
        )

    def state_dict(self) -> dict[str, Any]:
        """``{"train_epoch", "train_batches"}``: the training epoch under way and how many of
        its batches have been trained on (empty outside of ``fit``)."""
        trainer = self.trainer
        if trainer is None or self._train_sampler is None or trainer.state.fn != "fit":
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        epoch, batches = self._train_sampler.epoch, int(progress.processed)
        if batches >= trainer.num_training_batches:  # saved at the end of an epoch
            epoch, batches = epoch + 1, 0
        return {"train_epoch": epoch, "train_batches": batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "train_epoch" in state_dict:
            self._resume_position = (
                int(state_dict["train_epoch"]),
                int(state_dict["train_batches"]),
            )
