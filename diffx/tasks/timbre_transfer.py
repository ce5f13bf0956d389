"""DDSP timbre transfer (Engel et al., "DDSP: Differentiable Digital Signal Processing",
ICLR 2020): an autoencoder whose encoder is fixed (f0 from CREPE and A-weighted loudness) and
whose decoder drives differentiable synthesizers.

:class:`diffx.nn.DDSPDecoder` maps f0 and loudness per frame to the controls of diffx's
harmonic oscillator bank (:func:`diffx.functional.harmonic_synth`) and filtered noise
(:func:`diffx.functional.filtered_noise`); their sum passes through a learnable reverb impulse
response, and the output is compared with the recording by the multi-scale spectral loss
(:class:`diffx.losses.MultiScaleSpectralLoss`). Trained on one instrument, the model plays that
instrument from the f0 and loudness of any other sound: ``diffx timbre``.

Validation and test log the paper's resynthesis measures: ``spectral_loss``, ``f0_error_cents``
(CREPE on the output against the recording's f0, on note frames), ``f0_within_50_cents`` (the
fraction of those frames) and ``loudness_error_db`` (A-weighted, on note frames).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from diffx.analysis.features import (
    CREPE_MODELS,
    DEFAULT_FRAME_RATE_HZ,
    LOUDNESS_QUANTILES,
    frame_hop,
    resynthesis_errors,
)
from diffx.analysis.plots import plot_timbre_transfer
from diffx.functional import fft_convolve, filtered_noise, harmonic_synth, noise_reverb_ir
from diffx.losses import MultiScaleSpectralLoss
from diffx.losses.spectral import DDSP_FFT_SIZES
from diffx.nn import DDSPDecoder
from diffx.tasks.base import AudioTask, adam_with_cosine_decay

REVERBS = ("noise", "free")

REVERB_INIT_STD = 1e-6
"""The ``"free"`` reverb's taps start as noise this small (DDSP's initializer): practically
dry, with a gradient in every tap."""

REVERB_BANDS = 8
"""Bands of the ``"noise"`` reverb, each with its own gain and decay time."""

REVERB_MIN_RT60_S = 0.01
REVERB_INIT_RT60_S = 0.3
REVERB_MAX_GAIN_DB = 0.0
REVERB_MIN_GAIN_DB = -80.0
REVERB_INIT_GAIN_DB = -40.0
"""The ``"noise"`` reverb's bands: RT60 between 10 ms and the response's length (so every tail
has decayed by 60 dB before it is cut), energy between -80 and 0 dB relative to the dry sound;
it starts at a 0.3 s decay 40 dB down (practically dry)."""

METRICS = ("spectral_loss", "loudness_error_db", "f0_error_cents", "f0_within_50_cents")


class TimbreTransfer(AudioTask):
    """DDSP autoencoder: f0 and loudness in, the training instrument's sound out.

    Args:
        sample_rate: Hz (DDSP: 16000); linked from the data module by the CLI.
        frame_rate_hz: control frames per second (DDSP: 250); must match the data's.
        n_harmonics, n_noise_bands, hidden_size, gru_size, mlp_layers: the decoder
            (:class:`diffx.nn.DDSPDecoder`; the paper: 100, 65, 512, 512, 3).
        reverb_seconds: length of the learnable reverb impulse response (DDSP's solo
            instrument model: 48000 samples at 16 kHz, 3 s); 0 turns the reverb off.
        reverb: how the response is learnt. ``"noise"``: Gaussian noise in
            :data:`REVERB_BANDS` bands, each with a learnt gain and exponential decay
            (:func:`diffx.functional.noise_reverb_ir`; like DDSP's ``ExpDecayReverb``, per
            band). ``"free"``: every tap learnt on its own (DDSP's default
            ``Reverb(trainable=True)``); with Adam each tap moves by about the learning rate
            per step, so on short runs and dry data the taps drift into a long, loud,
            non-decaying response that smears notes into each other (seen on the quickstart:
            after 800 steps its 1 s response held 2.4 times the dry path's energy and had
            barely decayed by its end).
        learning_rate: Adam step size (DDSP: 1e-3).
        final_learning_rate: cosine decay to this over ``trainer.max_steps`` (``None``: a
            constant rate).
        fft_sizes: scales of the spectral loss (DDSP: 2048 down to 64).
        crepe_model: the f0 tracker the features came from (``"full"`` or ``"tiny"``); kept
            so that inference uses the same one, and used for the ``f0_error_cents`` metric.
        f0_metric: compute the CREPE-based metrics at validation (the slowest part of it).
        example_seconds: length of the audio examples logged to TensorBoard.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        frame_rate_hz: int = DEFAULT_FRAME_RATE_HZ,
        n_harmonics: int = 100,
        n_noise_bands: int = 65,
        hidden_size: int = 512,
        gru_size: int = 512,
        mlp_layers: int = 3,
        reverb_seconds: float = 3.0,
        reverb: str = "noise",
        learning_rate: float = 1e-3,
        final_learning_rate: float | None = None,
        fft_sizes: Sequence[int] = DDSP_FFT_SIZES,
        crepe_model: str = "full",
        f0_metric: bool = True,
        example_seconds: float = 4.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.hop = frame_hop(sample_rate, frame_rate_hz)
        if crepe_model not in CREPE_MODELS:
            raise ValueError(f"crepe_model must be one of {CREPE_MODELS}, got {crepe_model!r}")
        if not 0 <= reverb_seconds <= 10:
            raise ValueError(f"reverb_seconds must be in [0, 10], got {reverb_seconds}")
        if reverb not in REVERBS:
            raise ValueError(f"reverb must be one of {REVERBS}, got {reverb!r}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        self.sample_rate = int(sample_rate)
        self.frame_rate_hz = int(frame_rate_hz)
        self.learning_rate = float(learning_rate)
        self.final_learning_rate = final_learning_rate
        self.crepe_model = crepe_model
        self.f0_metric = bool(f0_metric)
        self.example_seconds = float(example_seconds)
        self.decoder = DDSPDecoder(n_harmonics, n_noise_bands, hidden_size, gru_size, mlp_layers)
        # Tap 0 of the wet response is left out: the dry path is added with gain 1, so the
        # reverb can only add to the sound, never cancel it.
        self.reverb_taps = round(reverb_seconds * sample_rate) - 1
        self.reverb = reverb
        self.reverb_ir = self.reverb_rt60_raw = self.reverb_gain_raw = None
        if self.reverb_taps > 0 and reverb == "free":
            self.reverb_ir = nn.Parameter(REVERB_INIT_STD * torch.randn(self.reverb_taps))
        elif self.reverb_taps > 0:
            self.reverb_max_rt60_s = max(reverb_seconds, 2 * REVERB_MIN_RT60_S)
            init_rt60 = min(REVERB_INIT_RT60_S, 0.5 * self.reverb_max_rt60_s)
            self.reverb_rt60_raw = nn.Parameter(
                torch.full((REVERB_BANDS,), _logit(init_rt60, REVERB_MIN_RT60_S,
                                                   self.reverb_max_rt60_s))
            )  # fmt: skip
            self.reverb_gain_raw = nn.Parameter(
                torch.full((REVERB_BANDS,), _logit(REVERB_INIT_GAIN_DB, REVERB_MIN_GAIN_DB,
                                                   REVERB_MAX_GAIN_DB))
            )  # fmt: skip
        self.spectral_loss = MultiScaleSpectralLoss(fft_sizes, reduction="none")
        # What `diffx timbre` needs to know about the training data (set at fit start, saved
        # in checkpoints): the loudness quantiles of its notes and their mean pitch.
        self.register_buffer("loudness_quantiles_db", torch.zeros(LOUDNESS_QUANTILES))
        self.register_buffer("mean_pitch_midi", torch.tensor(float("nan")))
        self._sums: dict[str, float] = {}
        self._example: tuple | None = None

    # -- synthesis ---------------------------------------------------------------------------

    def reverb_response(self) -> torch.Tensor | None:
        """The wet impulse response from its second tap on, ``(taps,)``; ``None`` when off."""
        if self.reverb_ir is not None:
            return self.reverb_ir
        if self.reverb_rt60_raw is None:
            return None
        rt60_s = REVERB_MIN_RT60_S + (self.reverb_max_rt60_s - REVERB_MIN_RT60_S) * torch.sigmoid(
            self.reverb_rt60_raw
        )
        gain_db = REVERB_MIN_GAIN_DB + (REVERB_MAX_GAIN_DB - REVERB_MIN_GAIN_DB) * torch.sigmoid(
            self.reverb_gain_raw
        )
        # A fixed noise draw (noise_reverb_ir's default seed): only gains and decays are learnt.
        return noise_reverb_ir(rt60_s[None], gain_db[None], self.sample_rate, self.reverb_taps)[
            0, 0
        ]

    def forward(
        self, f0_hz: torch.Tensor, loudness_db: torch.Tensor, noise_seed: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Synthesize from controls.

        Args:
            f0_hz, loudness_db: ``(batch, frames)``.
            noise_seed: seed of the filtered noise (``None``: torch's global generator).

        Returns:
            dict of ``audio``, ``harmonic``, ``noise`` ``(batch, 1, frames * hop)`` and the
            decoder's controls (``amplitude``, ``harmonic_distribution``, ``noise_magnitudes``).
        """
        controls = self.decoder(f0_hz, loudness_db)
        B, F = f0_hz.shape  # batch, frames
        n_samples = F * self.hop

        # One repeated frame at the end puts frame i exactly on sample i * hop under DDSP's
        # overlapping-window upsampling (which spaces frames - 1 intervals over the output).
        def extend(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, x[:, -1:]], dim=1)

        harmonic = harmonic_synth(
            extend(f0_hz.to(controls["amplitude"].dtype)),
            extend(controls["amplitude"]),
            extend(controls["harmonic_distribution"]),
            self.sample_rate,
            n_samples=n_samples,
            upsample="window",
        )
        generator = None
        if noise_seed is not None:
            generator = torch.Generator(device=f0_hz.device).manual_seed(int(noise_seed))
        noise = filtered_noise(controls["noise_magnitudes"], n_samples, generator=generator)
        dry = harmonic + noise
        audio = dry
        response = self.reverb_response()
        if response is not None:
            audio = dry + fft_convolve(dry, nn.functional.pad(response, (1, 0))[None, None])
        return {"audio": audio, "harmonic": harmonic, "noise": noise, **controls}

    # -- training ----------------------------------------------------------------------------

    def configure_optimizers(self):
        return adam_with_cosine_decay(
            self, self.parameters(), self.learning_rate, self.final_learning_rate
        )

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        statistics = getattr(datamodule, "statistics", None)
        if statistics is None:
            return
        frame_rate = getattr(datamodule, "frame_rate_hz", self.frame_rate_hz)
        tracker = getattr(datamodule, "crepe_model", self.crepe_model)
        if frame_rate != self.frame_rate_hz or tracker != self.crepe_model:
            raise ValueError(
                f"the data's frame_rate_hz={frame_rate} and crepe_model={tracker!r} must equal "
                f"the model's ({self.frame_rate_hz}, {self.crepe_model!r})"
            )
        stats = statistics()
        self.loudness_quantiles_db.copy_(torch.as_tensor(stats["loudness_quantiles_db"]))
        self.mean_pitch_midi.fill_(float(stats["mean_pitch_midi"]))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        pred = self(batch["f0_hz"], batch["loudness_db"])["audio"]
        loss = self.spectral_loss(pred, batch["audio"]).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=pred.shape[0])
        return loss

    # -- evaluation --------------------------------------------------------------------------

    def evaluate(
        self, batch: dict[str, torch.Tensor], with_f0: bool = True
    ) -> tuple[dict[str, float], torch.Tensor]:
        """Resynthesize one batch (fixed noise seed) and score it.

        Returns:
            ``(sums, audio)``: sums over the batch for :func:`summarize_errors` (see
            :func:`diffx.analysis.features.resynthesis_errors`) and the output
            ``(batch, 1, samples)``.
        """
        pred = self(batch["f0_hz"], batch["loudness_db"], noise_seed=0)["audio"]
        per_item = self.spectral_loss(pred, batch["audio"])
        sums = resynthesis_errors(
            pred,
            self.sample_rate,
            self.frame_rate_hz,
            batch["f0_hz"],
            batch["confidence"],
            batch["loudness_db"],
            crepe_model=self.crepe_model if with_f0 else None,
        )
        sums["spectral_loss_sum"] = float(per_item.detach().sum())
        sums["clips"] = float(pred.shape[0])
        return sums, pred

    def _accumulate(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        sums, pred = self.evaluate(batch, with_f0=self.f0_metric)
        for key, value in sums.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        if batch_idx == 0:
            self._example = (
                batch["audio"][0].detach().cpu(),
                pred[0].detach().cpu(),
                batch["f0_hz"][0].detach().cpu(),
                batch["loudness_db"][0].detach().cpu(),
            )

    def on_validation_epoch_start(self) -> None:
        self._sums = {}

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._accumulate(batch, batch_idx)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._accumulate(batch, batch_idx)

    def metrics(self) -> dict[str, float]:
        """:data:`METRICS` from the sums accumulated over an evaluation."""
        return summarize_errors(self._sums)

    def _log_metrics(self, stage: str) -> None:
        # Under DDP each process holds the sums of its share of the evaluation set.
        self._sums = self.sum_over_processes(self._sums)
        metrics = self.metrics()
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "spectral_loss")
        if "spectral_loss" in metrics:  # the training objective, under every task's name
            self.log(f"{stage}/loss", metrics["spectral_loss"])

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self._log_metrics("val")
        if self._example is None:
            return
        target, pred, f0_hz, loudness_db = self._example
        n = round(self.example_seconds * self.sample_rate)
        self.log_audio("val/target", target[..., :n])
        self.log_audio("val/resynthesis", pred[..., :n])
        figure = plot_timbre_transfer(
            target[0].numpy(), pred[0].numpy(), self.sample_rate, self.frame_rate_hz,
            f0_hz.numpy(), loudness_db.numpy(), titles=("recording", "resynthesis"),
        )
        self.log_figure("val/resynthesis", figure)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")


def _logit(value: float, low: float, high: float) -> float:
    """The pre-activation whose sigmoid maps to ``value`` on ``[low, high]``."""
    fraction = (value - low) / (high - low)
    return float(torch.logit(torch.tensor(fraction, dtype=torch.float64)))


def summarize_errors(sums: dict[str, float]) -> dict[str, float]:
    """Means from the sums of :meth:`TimbreTransfer.evaluate` (NaN where nothing was counted)."""

    def ratio(num: str, den: str) -> float:
        count = sums.get(den, 0.0)
        return sums.get(num, 0.0) / count if count else float("nan")

    out = {
        "spectral_loss": ratio("spectral_loss_sum", "clips"),
        "loudness_error_db": ratio("loudness_abs_error_db_sum", "note_frames"),
    }
    if sums.get("voiced_frames", 0.0):
        out["f0_error_cents"] = ratio("f0_abs_error_cents_sum", "voiced_frames")
        out["f0_within_50_cents"] = ratio("f0_within_50_cents", "voiced_frames")
    return {k: float(v) for k, v in out.items() if not np.isnan(v)}
