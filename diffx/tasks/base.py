"""What every diffx task shares: evaluation bookkeeping (sums, ESR, audio examples), audio
and figure logging to any Lightning logger, TBPTT frames, model export."""

from __future__ import annotations

import copy
import inspect
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger
from torch import nn

from diffx.io import save_audio
from diffx.io.models import save_model
from diffx.nn import LSTMAmp, WaveNet
from diffx.tasks.checkpoint import ResumeState
from diffx.tasks.links import HANDED_OVER

ESR_DB_FLOOR = 1e-12
"""Added to an ESR before taking 10 log10 for logs, so a perfect match logs -120 dB, not -inf."""

ESR_ERROR_KEY = "esr_error_energy"
ESR_TARGET_KEY = "esr_target_energy"
"""The names :meth:`AudioTask.add_error_energies` accumulates under."""


def to_db(ratio: torch.Tensor) -> torch.Tensor:
    """Energy ratio in dB, floored at :data:`ESR_DB_FLOOR`."""
    return 10.0 * torch.log10(ratio + ESR_DB_FLOOR)


def error_energies(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[error energy, target energy]`` (float64, CPU) of a batch, to sum over an evaluation.

    Their ratio over all the held-out audio together is its ESR: a mean of per-chunk ESRs
    would let a quiet chunk (a decaying note) dominate.
    """
    # To the CPU before float64: the audio's device may not have it (Apple MPS).
    return torch.stack([((pred - target) ** 2).sum(), (target**2).sum()]).detach().cpu().double()


def is_recurrent(model: nn.Module) -> bool:
    """Whether ``model`` is trained by truncated back-propagation through time."""
    return isinstance(model, LSTMAmp)


def settle_samples(model: nn.Module, warmup_samples: int) -> int:
    """Samples at the start of a chunk whose output depends on what came before it.

    A recurrent model starts from a zero state (``warmup_samples`` to settle); a WaveNet
    assumes silence before the chunk (its receptive field minus one).
    """
    if isinstance(model, WaveNet):
        return model.receptive_field - 1
    return warmup_samples


def tbptt_frames(total: int, start: int, frame: int, min_frame: int = 1) -> list[tuple[int, int]]:
    """``[start, total)`` cut into frames of ``frame`` samples; a last frame shorter than
    ``min_frame`` is merged into the one before it (so every frame is long enough for the loss).
    """
    if start >= total:
        raise ValueError(f"no samples left to train on: start {start} >= length {total}")
    bounds = [(s, min(s + frame, total)) for s in range(start, total, frame)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_frame:
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    return bounds


def adam_with_cosine_decay(
    task: pl.LightningModule, parameters, learning_rate: float, final_learning_rate: float | None
):
    """Adam at ``learning_rate``; with ``final_learning_rate``, a per-step cosine decay to it.

    The decay spans ``task.trainer.max_steps`` optimizer steps, so it returns Lightning's
    optimizer dict; without ``final_learning_rate`` the bare optimizer (a constant rate).

    Raises:
        ValueError: ``final_learning_rate`` is given but the trainer has no ``max_steps``.
    """
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    if final_learning_rate is None:
        return optimizer
    max_steps = task.trainer.max_steps
    if max_steps is None or max_steps < 1:
        raise ValueError("final_learning_rate needs trainer.max_steps (the decay's length)")
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max_steps, eta_min=final_learning_rate
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class AudioTask(pl.LightningModule):
    """LightningModule base: evaluation bookkeeping, audio and figures for every logger,
    model export.

    Subclasses set ``self.sample_rate``.

    One evaluation (a validation or test epoch) is kept in two places, both emptied when it
    starts (:class:`EvaluationMeans`, so a task needs no epoch-start hook of its own):

    - ``evaluation_sums``: ``{name: float64 total}`` that :meth:`accumulate` adds each batch's
      sums to (a metric summed over the batch's items, the item count,
      :meth:`add_error_energies`). At the epoch's end :meth:`evaluation_totals` sums them over
      the DDP processes; :meth:`log_means`, :meth:`log_esr` and :meth:`log_metrics` log
      ``<stage>/<name>``. A metric is then a ratio of totals over the whole held-out set,
      never a mean of per-batch means.
    - ``evaluation_example``: the first batch's signals (:meth:`keep_example`), logged as
      audio by :meth:`log_example_audio`.
    """

    sample_rate: int

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # {name: [sum, count, log options]} of this process's held-back evaluation means
        self._evaluation_sums: dict[str, list] = {}
        self.evaluation_sums: dict[str, float] = {}
        self.evaluation_example: dict[str, torch.Tensor] | None = None

    def save_hyperparameters(
        self, *args, ignore: Sequence[str] | str | None = None, frame=None, logger: bool = True
    ) -> None:
        """Lightning's, leaving out the arguments that receive an object of the data module
        when a run is built (:data:`diffx.tasks.links.HANDED_OVER`).

        They are the data's, not settings of the task. LightningCLI adds the value of every
        link applied at instantiation to the hyperparameters of the task it builds, also of a
        task that lacks the link's target (jsonargparse counts such a link as applied: a
        :class:`~diffx.tasks.ProxyTraining` on style-transfer data is handed the data's chain);
        kept, they would be pickled into every checkpoint and break
        ``load_from_checkpoint``.
        """
        ignore = [ignore] if isinstance(ignore, str) else list(ignore or [])
        frame = frame or inspect.currentframe().f_back  # the caller's, as Lightning takes it
        super().save_hyperparameters(
            *args, ignore=[*ignore, *HANDED_OVER], frame=frame, logger=logger
        )

    def configure_callbacks(self) -> list[pl.Callback]:
        """:class:`~diffx.tasks.checkpoint.ResumeState` (random generators saved in checkpoints
        and restored on resume, atomic checkpoint writes: a resumed run continues exactly
        where a killed one stopped) and :class:`EvaluationMeans` (exact means under DDP)."""
        return [ResumeState(), EvaluationMeans()]

    def log(self, name: str, value, *args, **kwargs) -> None:
        """Lightning's ``log``; under DDP, a mean logged with ``sync_dist=True`` and a
        ``batch_size`` from ``validation_step`` or ``test_step`` is summed here (float64) and
        logged once at the epoch's end as (sum over processes) / (count over processes)
        (:class:`EvaluationMeans`).

        Lightning reduces such a mean as the average over processes of their sums divided by
        the average of their counts, and averages the integer counts in integers: with
        shares of 2 and 1 items the count becomes 1, not 1.5, and the mean 1.5 times too
        large. The shares differ as soon as the evaluation set does not split evenly
        (:class:`diffx.data.sampling.EvalSampler` does not pad it).
        """
        if not args and self._exact_mean(kwargs):
            total = self._evaluation_sums.setdefault(name, [0.0, 0.0, {}])
            size = float(kwargs["batch_size"])
            total[0] += float(torch.as_tensor(value).detach().cpu().double().mean()) * size
            total[1] += size
            total[2] = {k: kwargs[k] for k in ("prog_bar", "logger") if k in kwargs}
            return
        super().log(name, value, *args, **kwargs)

    def _exact_mean(self, kwargs: dict) -> bool:
        return (
            self._trainer is not None
            and self.trainer.world_size > 1
            and self._current_fx_name in ("validation_step", "test_step")
            and bool(kwargs.get("sync_dist"))
            and kwargs.get("batch_size") is not None
            and kwargs.get("reduce_fx", "mean") in ("mean", torch.mean)
            and not kwargs.get("on_step")
            and kwargs.get("on_epoch", True) is not False
            and not kwargs.get("rank_zero_only")
        )

    def log_evaluation_means(self) -> None:
        """Log the means :meth:`log` held back: every process passes its sums and counts,
        the means are over all of them (called at the end of a validation or test epoch, on
        every process: a collective)."""
        sums = self._evaluation_sums
        totals = self.sum_over_processes(
            {(name, part): sums[name][i] for name in sums for i, part in enumerate(("sum", "n"))}
        )
        for name in sorted({name for name, _ in totals}):
            options = sums[name][2] if name in sums else {}
            mean = totals[name, "sum"] / max(totals[name, "n"], 1.0)
            # Every process logs the same value; "max" over processes keeps it exact (an
            # average over 3 processes of 3 equal floats need not give that float back).
            super().log(name, mean, sync_dist=True, reduce_fx="max", **options)
        sums.clear()

    def sum_over_processes(self, values: dict) -> dict:
        """``values`` (e.g. error sums accumulated over this process's share of an
        evaluation) summed over the DDP processes, key by key (sortable, picklable keys; a key
        missing on a process counts 0 there); unchanged in one process. Call it on every
        process."""
        if self._trainer is None or self.trainer.world_size <= 1:
            return dict(values)
        names = sorted(set().union(*all_gather_objects(sorted(values))))
        if not names:  # the same on every process: no collective to run
            return {}
        totals = torch.tensor([float(values.get(n, 0.0)) for n in names], dtype=torch.float64)
        return dict(zip(names, sum_over_processes(totals, self.device).tolist()))

    # -- evaluation bookkeeping ----------------------------------------------------------------

    def reset_evaluation(self) -> None:
        """Empty ``evaluation_sums`` and ``evaluation_example`` (and the means :meth:`log`
        holds back); :class:`EvaluationMeans` calls it when a validation or test epoch
        starts."""
        self._evaluation_sums.clear()
        self.evaluation_sums = {}
        self.evaluation_example = None

    def accumulate(self, sums: Mapping[str, float | torch.Tensor]) -> None:
        """Add ``sums`` to ``evaluation_sums``, key by key, in float64 (a tensor is summed
        over all its elements first): e.g. ``{"loss": per-item losses (batch,), "items":
        batch}``."""
        totals = self.evaluation_sums
        for name, value in sums.items():
            total = float(torch.as_tensor(value).detach().cpu().double().sum())
            totals[name] = totals.get(name, 0.0) + total

    def evaluation_totals(self) -> dict[str, float]:
        """``evaluation_sums`` summed over the DDP processes (each holds its share of the
        held-out set); a collective: call it on every process."""
        return self.sum_over_processes(self.evaluation_sums)

    def add_error_energies(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Accumulate the :func:`error_energies` of a batch for :meth:`log_esr`."""
        error, energy = error_energies(pred, target)
        self.accumulate({ESR_ERROR_KEY: error, ESR_TARGET_KEY: energy})

    def log_esr(self, stage: str, totals: Mapping[str, float] | None = None) -> None:
        """Log ``<stage>/esr`` and ``<stage>/esr_db`` (from rank zero): the error energy over
        the target energy of everything :meth:`add_error_energies` saw in this evaluation, on
        all processes (``totals``: from :meth:`evaluation_totals`, which is called, a
        collective, when not given)."""
        totals = self.evaluation_totals() if totals is None else totals
        energies = torch.tensor(
            [totals.get(ESR_ERROR_KEY, 0.0), totals.get(ESR_TARGET_KEY, 0.0)], dtype=torch.float64
        )
        ratio = energies[0] / (energies[1] + ESR_DB_FLOOR)
        self.log(f"{stage}/esr", ratio.float(), rank_zero_only=True)
        self.log(f"{stage}/esr_db", to_db(ratio).float(), rank_zero_only=True)

    def log_means(
        self, stage: str, count: str = "items", prog_bar: str = "loss"
    ) -> dict[str, float]:
        """Log ``<stage>/<name>`` = total / (total of ``count``) for every other name in the
        evaluation's totals (per-item metrics summed by :meth:`accumulate`); returns the
        means. A collective under DDP."""
        totals = self.evaluation_totals()
        items = totals.pop(count, 0.0)
        means = {name: total / max(items, 1) for name, total in totals.items()}
        self.log_metrics(stage, means, prog_bar)
        return means

    def log_metrics(self, stage: str, metrics: Mapping[str, float], prog_bar: str = "loss") -> None:
        """Log ``<stage>/<name>`` for every metric; ``prog_bar`` names the one shown in the
        progress bar. Every process logs the same values (they come from totals over all)."""
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == prog_bar)

    def keep_example(self, **signals: torch.Tensor) -> None:
        """Keep ``signals`` (audio ``(samples,)``, or the features a figure needs) as this
        evaluation's example, unless an earlier batch's is kept already."""
        if self.evaluation_example is None:
            self.evaluation_example = dict(signals)

    def log_example_audio(self, prefix: str = "audio") -> None:
        """Log every signal of the kept example as ``<prefix>/<name>`` (:meth:`log_audio`)."""
        for name, audio in (self.evaluation_example or {}).items():
            self.log_audio(f"{prefix}/{name}", audio)

    # -- audio and figures ----------------------------------------------------------------------

    def has_media_logger(self) -> bool:
        """Whether :meth:`log_audio` and :meth:`log_figure` have anywhere to go (a trainer
        with a logger), so a task can skip preparing examples nobody receives."""
        return self._trainer is not None and bool(self.loggers)

    def log_audio(self, tag: str, audio: torch.Tensor) -> None:
        """Log ``audio`` ``(samples,)`` or ``(1, samples)`` at ``self.sample_rate``, clipped to
        [-1, 1], at the global step, to every logger of the trainer (rank zero only):

        - TensorBoard: an audio summary ``tag``;
        - Weights & Biases: a ``wandb.Audio`` under ``tag`` (step: ``trainer/global_step``,
          as Lightning logs the scalars);
        - any other logger (CSV, MLflow, ...): a float WAV file
          ``<logger.log_dir>/media/<tag>/step_<global step>.wav`` (``tag``'s ``/`` make
          folders; the logger's ``save_dir`` when it has no ``log_dir``).
        """
        if not self.has_media_logger() or self.global_rank != 0:
            return
        clip = audio.detach().float().reshape(1, -1).clamp(-1.0, 1.0).cpu()
        step = self.global_step
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_audio(tag, clip, step, sample_rate=self.sample_rate)
            elif isinstance(logger, WandbLogger):
                logger.log_audio(tag, [clip[0].numpy()], step=step, sample_rate=[self.sample_rate])
            else:
                path = media_path(logger, tag, step, ".wav")
                if path is not None:
                    save_audio(path, clip, self.sample_rate, subtype="FLOAT")

    def log_figure(self, tag: str, figure) -> None:
        """Log a matplotlib figure at the global step to every logger of the trainer (rank
        zero only): a TensorBoard image summary ``tag``, a ``wandb.Image`` under ``tag``, or
        for any other logger a file ``<logger.log_dir>/media/<tag>/step_<global step>.png``
        (as :meth:`log_audio`).

        diffx's figures are built without pyplot, so there is no pyplot state to close.
        """
        if not self.has_media_logger() or self.global_rank != 0:
            return
        step = self.global_step
        png = b""  # rendered once, for every logger that takes an image
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(tag, figure, step, close=False)
            elif isinstance(logger, WandbLogger):
                from PIL import Image  # matplotlib's own dependency

                png = png or render_png(figure)
                logger.log_image(tag, [Image.open(io.BytesIO(png))], step=step)
            else:
                path = media_path(logger, tag, step, ".png")
                if path is not None:
                    png = png or render_png(figure)
                    path.write_bytes(png)

    def export_model(self, model: nn.Module, stem: str | None, what: str) -> Path | None:
        """Save a float32 copy of ``model`` as ``<run folder>/<stem>.json|.nam`` (rank zero).

        Call it on every process: finding the run folder is a collective under DDP.

        Returns the path, or ``None`` when there is nothing to do (no stem, no logger folder,
        not rank zero).
        """
        run_dir = self.run_dir()
        if stem is None or run_dir is None or self.global_rank != 0:
            return None
        path = run_dir / f"{stem}{model_suffix(model)}"
        save_model(copy.deepcopy(model).float(), path)
        print(f"exported {what} to {path}")
        return path

    def best_copy(self, attribute: str) -> tuple[nn.Module, str]:
        """A copy of ``self.<attribute>`` with the weights that scored best on validation.

        "Best" is the best checkpoint of the first ``ModelCheckpoint`` that monitors a metric
        (as the NAM trainer exports its best model); without one, the final weights.

        Returns:
            ``(module, what)``: the copy and a description for messages.
        """
        model = copy.deepcopy(getattr(self, attribute))
        best = ""
        for callback in self.trainer.checkpoint_callbacks if self._trainer is not None else []:
            if getattr(callback, "monitor", None) and getattr(callback, "best_model_path", ""):
                best = callback.best_model_path
                break
        if not best:
            return model, "the final model"
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        prefix = f"{attribute}."
        model.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )
        return model, f"the best model on validation ({Path(best).name})"

    def export_best(self, attribute: str, stem: str | None) -> Path | None:
        """Export ``self.<attribute>`` with its best weights (:meth:`best_copy`).

        Call it on every process (see :meth:`export_model`).
        """
        if stem is None:
            return None
        model, what = self.best_copy(attribute)
        return self.export_model(model, stem, what)

    def run_dir(self) -> Path | None:
        """The logger's folder for this run (``None`` without a logger); under DDP every
        process must call it, since ``trainer.log_dir`` broadcasts rank zero's folder."""
        # Without a logger Lightning's log_dir falls back to default_root_dir (the current
        # folder), where exports would land unasked (a notebook's folder, say).
        if self._trainer is None or not self.trainer.loggers or self.trainer.log_dir is None:
            return None
        return Path(self.trainer.log_dir)


class EvaluationMeans(pl.Callback):
    """Starts every validation and test epoch of an :class:`AudioTask` with empty
    bookkeeping (:meth:`AudioTask.reset_evaluation`), and at its end logs the means
    :meth:`AudioTask.log` held back under DDP (callbacks run before the task's own hooks, which
    may read them)."""

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule):
        if isinstance(pl_module, AudioTask):  # nothing left from an interrupted evaluation
            pl_module.reset_evaluation()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule):
        if isinstance(pl_module, AudioTask) and trainer.world_size > 1:
            pl_module.log_evaluation_means()

    on_test_epoch_start = on_validation_epoch_start
    on_test_epoch_end = on_validation_epoch_end


def media_path(logger: Logger, tag: str, step: int, suffix: str) -> Path | None:
    """``<run folder>/media/<tag>/step_<step><suffix>`` of a logger that takes no media
    itself (its folder created); ``None`` when the logger has no folder on disk.

    The run folder is the logger's ``log_dir`` (CSVLogger: ``<save_dir>/<name>/<version>``),
    else its ``save_dir``.
    """
    folder = getattr(logger, "log_dir", None) or logger.save_dir
    if folder is None:
        return None
    path = Path(folder, "media", *tag.split("/"), f"step_{step}{suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def render_png(figure) -> bytes:
    """A matplotlib figure as PNG bytes (its own canvas: no pyplot state)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def all_gather_objects(value) -> list:
    """``value`` from every DDP process, in rank order (``[value]`` without DDP)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def sum_over_processes(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``values`` summed over the DDP processes (float64, on the CPU); unchanged without DDP.
    ``device``: where the collective runs (the process's device: NCCL needs CUDA tensors)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    values = values.to(device)
    torch.distributed.all_reduce(values)
    return values.cpu()


def check_loss_weights(losses: dict[str, float], known: tuple[str, ...]) -> dict[str, float]:
    """Validate a YAML ``{loss name: weight}`` mapping against the ``known`` names.

    Raises:
        ValueError: an unknown name (listing the known ones), no entry, or a weight that is
            negative or not finite.
    """
    losses = dict(losses)
    unknown = sorted(set(losses) - set(known))
    if unknown:
        raise ValueError(f"unknown loss(es) {unknown}; choose from {known}")
    if not losses or any(not (0 <= w < float("inf")) for w in losses.values()):
        raise ValueError(f"losses needs at least one entry, all weights >= 0 and finite: {losses}")
    return {name: float(w) for name, w in losses.items()}


def model_suffix(model: nn.Module) -> str:
    """The file format a model exports to: ``.nam`` for a WaveNet, GuitarML ``.json`` for an RNN."""
    return ".nam" if isinstance(model, WaveNet) else ".json"
