"""Train a neural proxy of one effect (DeepAFx-ST's proxies; Steinmetz et al., JAES 2022).

A :class:`diffx.effects.NeuralProxy` (a TCN conditioned on the effect's normalized
parameters) learns to reproduce ``effect(x, params)`` for random ``params``. Its input ``x``
is the data module's ``input`` audio: with :class:`diffx.data.StyleTransferDataModule` these
are crops processed by random settings of the data chain, so the proxy hears the levels and
spectra it will meet inside a style-transfer chain. The effect may be anything with
``param_specs`` (a diffx effect, a :class:`diffx.effects.PedalboardEffect`, a plug-in); it
is only run forward.

Validation reports the proxy's error-to-signal ratio against the effect (``val/esr``, and in
dB), with parameters drawn from a fixed seed so every validation sees the same settings. At the
end of ``fit`` the proxy with the best ``val/loss`` is written to ``<run folder>/<export_name>.pt``
(:func:`diffx.effects.load_proxy` reads it; :class:`StyleTransfer` takes it in ``proxies``).
"""

from __future__ import annotations

import torch
from torch import nn

from diffx._validation import check_sample_rate
from diffx.data.sources import check_effect_rate
from diffx.effects.proxy import NeuralProxy, save_proxy
from diffx.losses import MultiResolutionSTFTLoss
from diffx.tasks.base import AudioTask, check_loss_weights

LOSSES = ("l1", "mrstft")

#: 100 x waveform L1 + MR-STFT, DeepAFx-ST's style-transfer weighting. MR-STFT alone is blind to
#: phase, and at style-transfer levels (-23 LUFS, RMS about 0.07) an L1 of equal weight is too
#: small to matter: `diffx fit --config configs/style_transfer/proxy_eq.yaml` with
#: ``losses: {l1: 1.0, mrstft: 1.0}`` ended 2500 steps at a validation ESR of 1.40 (+1.5 dB),
#: worse than silence; with these weights the same config reaches -9.1 dB.
DEFAULT_PROXY_LOSSES = {"l1": 100.0, "mrstft": 1.0}

VALIDATION_SEED = 4321


class ProxyTraining(AudioTask):
    """Fit a conditional TCN to an effect.

    Args:
        effect: the effect to imitate (any module taking ``(x, params)`` with ``param_specs``
            and ``sample_rate``); its rate must equal ``sample_rate``.
        sample_rate: Hz; linked from the data module by the CLI.
        n_blocks, channels, kernel_size, dilation_growth: the TCN (DeepAFx-ST: 4, 64, 13, 8).
        learning_rate: Adam step size.
        losses: ``{"l1": w, "mrstft": w}`` weights (default :data:`DEFAULT_PROXY_LOSSES`).
        export_name: file stem of the exported proxy (``None``: no export).
    """

    def __init__(
        self,
        effect: nn.Module,
        sample_rate: int = 24000,
        n_blocks: int = 4,
        channels: int = 64,
        kernel_size: int = 13,
        dilation_growth: int = 8,
        learning_rate: float = 1e-3,
        losses: dict[str, float] | None = None,
        export_name: str | None = "proxy",
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["effect"])
        self.sample_rate = int(check_sample_rate(sample_rate))
        check_effect_rate(effect, self.sample_rate, "effect")
        if not getattr(effect, "param_specs", None):
            raise ValueError(f"effect {type(effect).__name__} has no param_specs to condition on")
        self.effect = effect.requires_grad_(False)
        self.proxy = NeuralProxy.for_effect(
            effect,
            n_blocks=n_blocks,
            channels=channels,
            kernel_size=kernel_size,
            dilation_growth=dilation_growth,
        )
        if not (learning_rate > 0):
            raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
        self.learning_rate = float(learning_rate)
        self.losses = check_loss_weights(
            DEFAULT_PROXY_LOSSES if losses is None else losses, LOSSES
        )
        self.mrstft = MultiResolutionSTFTLoss()
        self.export_name = export_name

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return self.proxy(x, params)

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = 0.0
        if "l1" in self.losses:
            total = total + self.losses["l1"] * (pred - target).abs().mean()
        if "mrstft" in self.losses:
            total = total + self.losses["mrstft"] * self.mrstft(pred, target)
        return total

    def configure_optimizers(self):
        return torch.optim.Adam(self.proxy.parameters(), lr=self.learning_rate)

    def _pair(self, batch, generator: torch.Generator | None):
        x = batch["input"]
        params = torch.rand(x.shape[0], self.proxy.parameter_size(), generator=generator)
        params = params.to(device=x.device, dtype=x.dtype)
        with torch.no_grad():
            target = self.effect(x, params)
        return x, params, target

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, params, target = self._pair(batch, None)
        loss = self.loss(self.proxy(x, params), target)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        generator = torch.Generator().manual_seed(VALIDATION_SEED + batch_idx)
        x, params, target = self._pair(batch, generator)
        pred = self.proxy(x, params)
        self.log(f"{stage}/loss", self.loss(pred, target), batch_size=x.shape[0], prog_bar=True)
        self.add_error_energies(pred, target)
        self.keep_example(input=x[0, 0], effect=target[0, 0], proxy=pred[0, 0])

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self.log_esr("test")

    def on_validation_epoch_end(self) -> None:
        self.log_esr("val")
        if not self.trainer.sanity_checking:
            self.log_example_audio()

    def on_fit_end(self) -> None:
        run_dir = self.run_dir()
        if self.export_name is None or run_dir is None or self.global_rank != 0:
            return
        proxy, what = self.best_copy("proxy")
        path = save_proxy(proxy.float(), run_dir / f"{self.export_name}.pt")
        print(f"exported {what} to {path}")
