"""Effect modeling: train an LSTM or NAM WaveNet to imitate a device from (input, target) audio.

The recipe of Wright, Damskägg & Välimäki (DAFx 2019 / Applied Sciences 2020) as used by
GuitarML and Carson et al.: error-to-signal ratio with a pre-emphasis filter plus a DC term.
Recurrent models train by truncated back-propagation through time: each segment starts from
a zero state, ``warmup_samples`` (1000) run without gradient, then every ``frame_samples``
(2048) the loss is back-propagated and the optimizer steps, the state carried on. A WaveNet
trains on whole segments (16384 samples in the NAM trainer) with the first ``receptive_field
- 1`` output samples, which depend on audio before the segment, left out of the loss.

Every optimizer step counts as a training step (``trainer.max_steps``), as in the papers.
At the end of ``fit`` the model (the best on validation when a ``ModelCheckpoint`` monitors a
metric, else the final one) is exported for plug-ins (``model.json`` GuitarML/Proteus for
an LSTM, ``model.nam`` for a WaveNet) into the run folder, beside the checkpoints and config.
"""

from __future__ import annotations

import torch
from torch import nn

from diffx._validation import check_integer, check_sample_rate
from diffx.io.models import load_model
from diffx.losses import DCLoss, ESRLoss, MultiResolutionSTFTLoss, make_pre_emphasis
from diffx.tasks.base import AudioTask, is_recurrent, settle_samples, tbptt_frames


def prepare_model(model: nn.Module | None, init_from: str | None, sample_rate: int) -> nn.Module:
    """The model to train: ``model`` as configured, or loaded from a ``.nam``/``.json`` file.

    Raises:
        ValueError: neither or both given; the model's own sample rate differs from the task's.
    """
    if (model is None) == (init_from is None):
        raise ValueError("give exactly one of model (an architecture) or init_from (a model file)")
    if init_from is not None:
        model = load_model(init_from)
    own_rate = getattr(model, "sample_rate", None)
    if own_rate is None:
        model.sample_rate = sample_rate
    elif own_rate != sample_rate:
        raise ValueError(
            f"the model was made for sample_rate={own_rate} Hz but the task runs at {sample_rate} "
            "Hz; resample the data or set sample_rate to match"
        )
    return model


class EffectModeling(AudioTask):
    """Train a neural amp/effect model on aligned (input, target) audio.

    Args:
        model: the network (:class:`diffx.nn.LSTMAmp` or :class:`diffx.nn.WaveNet`); or
            ``None`` with ``init_from``.
        init_from: a ``.nam`` or GuitarML ``.json`` file to continue training from (e.g. a
            published capture), instead of ``model``.
        sample_rate: Hz; linked from the data module by the CLI.
        learning_rate: Adam step size (5e-4 in Wright et al.).
        pre_emphasis: filter applied to both signals before the ESR (``"hp"``: 1 - 0.85 z^-1,
            Wright et al.; ``"aw"``: A-weighting; ``"lp"``; ``None``).
        dc_weight: weight of the DC loss added to the ESR.
        warmup_samples: recurrent models: samples run without gradient at the start of a
            segment to settle the state.
        frame_samples: recurrent models: TBPTT frame length; one optimizer step per frame.
        export_name: file stem for the exported model in the run folder (``None``: no export).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        init_from: str | None = None,
        sample_rate: int = 44100,
        learning_rate: float = 5e-4,
        pre_emphasis: str | None = "hp",
        dc_weight: float = 1.0,
        warmup_samples: int = 1000,
        frame_samples: int = 2048,
        export_name: str | None = "model",
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.sample_rate = check_sample_rate(sample_rate)
        self.model = prepare_model(model, init_from, self.sample_rate)
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
        if dc_weight < 0:
            raise ValueError(f"dc_weight must be non-negative, got {dc_weight!r}")
        self.learning_rate, self.dc_weight = float(learning_rate), float(dc_weight)
        self.warmup_samples = check_integer(warmup_samples, "warmup_samples", 0)
        self.frame_samples = check_integer(frame_samples, "frame_samples", 1)
        self.export_name = export_name
        self.esr_loss = ESRLoss(pre_emphasis=make_pre_emphasis(pre_emphasis, self.sample_rate))
        self.dc_loss = DCLoss()
        self.spectral = MultiResolutionSTFTLoss()
        self.automatic_optimization = False  # one optimizer step per TBPTT frame

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Process ``(batch, 1, samples)`` audio from silence; returns the same shape."""
        return self.model(x)

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Pre-emphasised ESR plus ``dc_weight`` times the DC loss."""
        return self.esr_loss(pred, target) + self.dc_weight * self.dc_loss(pred, target)

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.learning_rate)

    def _step(self, optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch["input"], batch["target"]
        optimizer = self.optimizers()
        losses = []
        if is_recurrent(self.model):
            if x.shape[-1] <= self.warmup_samples:
                raise ValueError(
                    f"segments of {x.shape[-1]} samples leave nothing after the "
                    f"{self.warmup_samples}-sample warm-up; lengthen data.segment_samples"
                )
            self.model.stateful = True
            self.model.reset_state()
            try:
                with torch.no_grad():
                    self.model(x[..., : self.warmup_samples])
                for start, stop in tbptt_frames(
                    x.shape[-1], self.warmup_samples, self.frame_samples
                ):
                    loss = self.loss(self.model(x[..., start:stop]), y[..., start:stop])
                    self._step(optimizer, loss)
                    self.model.detach_state()
                    losses.append(loss.detach())
            finally:
                self.model.stateful = False
                self.model.reset_state()
        else:
            skip = settle_samples(self.model, self.warmup_samples)
            if x.shape[-1] <= skip:
                raise ValueError(
                    f"segments of {x.shape[-1]} samples are not longer than the model's "
                    f"receptive field minus one ({skip}); lengthen data.segment_samples"
                )
            loss = self.loss(self.model(x)[..., skip:], y[..., skip:])
            self._step(optimizer, loss)
            losses.append(loss.detach())
        mean_loss = torch.stack(losses).mean()
        self.log(
            "train/loss", mean_loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True
        )
        return mean_loss

    def _metrics(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        x, y = batch["input"], batch["target"]
        pred = self.model(x)
        skip = settle_samples(self.model, self.warmup_samples)
        if x.shape[-1] > 2 * skip:  # leave out the start that depends on audio before the chunk
            x, y, pred = x[..., skip:], y[..., skip:], pred[..., skip:]
        batch_size = x.shape[0]
        self.log(
            f"{stage}/loss",
            self.loss(pred, y),
            batch_size=batch_size,
            sync_dist=True,
            prog_bar=True,
        )
        self.add_error_energies(pred, y)
        self.log(f"{stage}/mrstft", self.spectral(pred, y), batch_size=batch_size, sync_dist=True)
        self.keep_example(input=x[0, 0], target=y[0, 0], output=pred[0, 0])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._metrics(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._metrics(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.model(batch["input"])

    def on_test_epoch_end(self) -> None:
        self.log_esr("test")

    def on_validation_epoch_end(self) -> None:
        self.log_esr("val")
        example = self.evaluation_example
        if example is None or self.trainer.sanity_checking:
            return
        from diffx.analysis.plots import plot_spectra

        self.log_example_audio()
        signals = {"target": example["target"], "output": example["output"]}
        self.log_figure("spectra/validation", plot_spectra(signals, self.sample_rate))

    def on_fit_end(self) -> None:
        self.export_best("model", self.export_name)
