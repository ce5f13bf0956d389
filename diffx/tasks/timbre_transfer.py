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

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from diffx.analysis.features import (
    CREPE_MODELS,
    DEFAULT_FRAME_RATE_HZ,
    LOUDNESS_FLOOR_DB,
    LOUDNESS_QUANTILES,
    QUIET_DB,
    a_weighted_loudness_db,
    adjust_loudness,
    crepe_pitch,
    detect_notes,
    frame_hop,
    resynthesis_errors,
)
from diffx.analysis.plots import plot_timbre_transfer
from diffx.analysis.tones import hz_to_midi
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
        example_seconds: length of the audio examples logged.
        training_statistics: returns the training data's feature statistics
            (:meth:`diffx.data.TimbreDataModule.statistics`: ``loudness_quantiles_db``,
            ``mean_pitch_midi``, and the ``frame_rate_hz`` and ``crepe_model`` the features
            were computed with, which must equal the model's); called when fitting starts (the
            data is set up by then) and kept in the model's buffers, so that ``diffx timbre``
            matches new audio to the training notes. The diffx CLI links it
            (:func:`diffx.tasks.links.link_data_to_model`); in Python pass
            ``training_statistics=data.statistics`` for a :class:`diffx.data.TimbreDataModule`
            ``data``. ``None``: the buffers stay unset (NaN pitch).
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
        training_statistics: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["training_statistics"])
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
            # Strictly inside (min, max): at either end the logit below is infinite.
            init_rt60 = min(REVERB_INIT_RT60_S, 0.5 * (REVERB_MIN_RT60_S + self.reverb_max_rt60_s))
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
        self.training_statistics = training_statistics

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
        if self.training_statistics is None:
            return
        stats = self.training_statistics()
        if not isinstance(stats, Mapping):
            raise ValueError(
                f"training_statistics gave a {type(stats).__name__}, not the statistics of a "
                "TimbreDataModule: TimbreTransfer trains on one"
            )
        frame_rate = stats.get("frame_rate_hz", self.frame_rate_hz)
        tracker = stats.get("crepe_model", self.crepe_model)
        if frame_rate != self.frame_rate_hz or tracker != self.crepe_model:
            raise ValueError(
                f"the data's frame_rate_hz={frame_rate} and crepe_model={tracker!r} must equal "
                f"the model's ({self.frame_rate_hz}, {self.crepe_model!r})"
            )
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
        self.accumulate(sums)
        self.keep_example(
            target=batch["audio"][0].detach().cpu(),
            resynthesis=pred[0].detach().cpu(),
            f0_hz=batch["f0_hz"][0].detach().cpu(),
            loudness_db=batch["loudness_db"][0].detach().cpu(),
        )

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._accumulate(batch, batch_idx)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._accumulate(batch, batch_idx)

    def metrics(self) -> dict[str, float]:
        """:data:`METRICS` from the sums this process accumulated over an evaluation."""
        return summarize_errors(self.evaluation_sums)

    def _log_metrics(self, stage: str) -> None:
        metrics = summarize_errors(self.evaluation_totals())
        self.log_metrics(stage, metrics, prog_bar="spectral_loss")
        if "spectral_loss" in metrics:  # the training objective, under every task's name
            self.log(f"{stage}/loss", metrics["spectral_loss"])

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self._log_metrics("val")
        if self.evaluation_example is None:
            return
        example = self.evaluation_example
        target, pred = example["target"], example["resynthesis"]  # (1, samples)
        n = round(self.example_seconds * self.sample_rate)
        self.log_audio("val/target", target[..., :n])
        self.log_audio("val/resynthesis", pred[..., :n])
        figure = plot_timbre_transfer(
            target[0].numpy(), pred[0].numpy(), self.sample_rate, self.frame_rate_hz,
            example["f0_hz"].numpy(), example["loudness_db"].numpy(),
            titles=("recording", "resynthesis"),
        )  # fmt: skip
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


# -- playing new audio on a trained model ----------------------------------------------------


@dataclass
class TransferResult:
    """What :func:`transfer_timbre` made, with the features it made it from.

    ``audio (samples,)`` float32 at ``sample_rate``; the ``(frames,)`` arrays are the input's
    measured features (``f0_hz``, ``confidence``, ``loudness_db``, ``note_mask``) and the
    controls the model played (``f0_control_hz``, ``loudness_control_db``).
    """

    audio: np.ndarray
    sample_rate: int
    frame_rate_hz: int
    f0_hz: np.ndarray
    confidence: np.ndarray
    loudness_db: np.ndarray
    note_mask: np.ndarray
    f0_control_hz: np.ndarray
    loudness_control_db: np.ndarray
    pitch_shift_octaves: float
    suggested_octaves: int | None


def suggest_octaves(mean_input_midi: float, mean_training_midi: float) -> int:
    """Whole octaves that bring a mean pitch nearest the training data's (ties go up)."""
    return int(math.floor((mean_training_midi - mean_input_midi) / 12.0 + 0.5))


def transfer_timbre(
    model,
    audio: torch.Tensor,
    pitch_shift_octaves: float | str = 0.0,
    loudness_shift_db: float = 0.0,
    auto_adjust: bool = True,
    quiet_db: float = QUIET_DB,
    noise_seed: int | None = 0,
) -> TransferResult:
    """Resynthesize ``audio (samples,)`` (mono, at ``model.sample_rate``) with ``model``.

    Args:
        model: a trained :class:`~diffx.tasks.TimbreTransfer`.
        pitch_shift_octaves: octaves to move f0 by, or ``"auto"`` (see the module docs).
        loudness_shift_db: dB added to the loudness after the automatic adjustment.
        auto_adjust: map the note loudness onto the training data's and quiet the gaps.
        quiet_db: dB taken off frames without a note by the automatic adjustment.
        noise_seed: seed of the filtered noise (``None``: torch's global generator).

    Raises:
        ValueError: bad audio (NaN, Inf, empty), an unknown pitch shift, or ``auto`` without
            training statistics in the checkpoint.
    """
    if not isinstance(audio, torch.Tensor) or audio.dim() != 1 or audio.numel() == 0:
        raise ValueError("audio must be a non-empty 1-D tensor (mono samples)")
    sample_rate, frame_rate = model.sample_rate, model.frame_rate_hz
    f0_hz, confidence = crepe_pitch(audio, sample_rate, frame_rate, model=model.crepe_model)
    loudness = a_weighted_loudness_db(audio, sample_rate, frame_rate)
    f0_np, conf_np, ld_np = f0_hz.numpy(), confidence.numpy(), loudness.numpy()
    mask, _ = detect_notes(ld_np, conf_np)

    has_statistics = bool(torch.isfinite(model.mean_pitch_midi))
    suggested = None
    if has_statistics and mask.any():
        mean_midi = float(hz_to_midi(torch.from_numpy(f0_np[mask])).mean())
        suggested = suggest_octaves(mean_midi, float(model.mean_pitch_midi))

    if pitch_shift_octaves == "auto":
        if suggested is None:
            raise ValueError(
                "--pitch-shift auto needs notes in the input and the training data's pitch "
                "statistics in the checkpoint (saved by `diffx fit` with a TimbreDataModule)"
            )
        pitch_shift_octaves = float(suggested)
    try:
        pitch_shift_octaves = float(pitch_shift_octaves)
    except (TypeError, ValueError):
        raise ValueError(
            f"pitch shift must be a number of octaves or 'auto', got {pitch_shift_octaves!r}"
        ) from None
    if not math.isfinite(pitch_shift_octaves) or not math.isfinite(float(loudness_shift_db)):
        raise ValueError("pitch and loudness shifts must be finite numbers")

    control_db = ld_np.astype(np.float64)
    if auto_adjust:
        if has_statistics:
            control_db, _ = adjust_loudness(
                ld_np, conf_np, model.loudness_quantiles_db.numpy(), quiet_db=quiet_db
            )
        else:
            warnings.warn(
                "the checkpoint holds no training-loudness statistics; the loudness is not "
                "adjusted",
                stacklevel=2,
            )
    control_db = np.maximum(control_db + float(loudness_shift_db), LOUDNESS_FLOOR_DB)
    control_f0 = f0_np.astype(np.float64) * 2.0**pitch_shift_octaves

    with torch.no_grad():
        out = model(
            torch.from_numpy(control_f0).float()[None],
            torch.from_numpy(control_db).float()[None],
            noise_seed=noise_seed,
        )["audio"]
    return TransferResult(
        audio=out[0, 0, : audio.numel()].numpy().astype(np.float32),
        sample_rate=sample_rate,
        frame_rate_hz=frame_rate,
        f0_hz=f0_np,
        confidence=conf_np,
        loudness_db=ld_np,
        note_mask=mask,
        f0_control_hz=control_f0,
        loudness_control_db=control_db,
        pitch_shift_octaves=pitch_shift_octaves,
        suggested_octaves=suggested,
    )
