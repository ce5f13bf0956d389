"""Phase alignment: fit a differentiable allpass cascade so a dry signal sums cleanly with a
processed copy of it (Bargum et al., "Differentiable Allpass Filters for Phase Response
Estimation and Automatic Signal Alignment", 2023).

The aligned dry is ``flip * delay_d(A(dry_shifted))``: the data module has already shifted
the dry by the integer lag (and polarity) of the cross-correlation peak; here a
:class:`diffx.nn.BiasNet` cascade ``A``, a small trainable delay ``d`` (samples, either sign)
and a polarity ``flip`` (+1 or -1) learn the frequency-dependent rest.

Where training starts (``init``): ``"fit"`` (default) first fits the measured phase with
:func:`diffx.analysis.allpass_fit.fit_allpass_phase` within the cascade's structure (its
numbers of second- and first-order sections) and sets the networks to produce that fit
(:meth:`diffx.nn.BiasNet.set_sections`), so gradient descent refines a global fit instead of
searching for one; the fitted delay and polarity start ``d`` and ``flip``. ``"network"`` is the
paper's start: the networks' own initial output, ``d = 0``, no flip (gradient descent from
there settles in local minima on most cascades of more than one section; see
docs/phase_alignment.md).

Losses, by name, each with a weight in ``losses`` (YAML: ``losses: {phase: 1.0}``):

``phase``         frequency domain, against the measured phase of the wet relative to the
                  dry (:class:`diffx.losses.PhaseResponseLoss`): for the first
                  ``unwrapped_steps`` steps on unwrapped phases (a smooth bowl that brings
                  every section near its place), then on wrapped ones (blind to whole turns).
                  No audio is filtered, so a step costs microseconds per frequency.
``group_delay``   frequency domain, group delay against the measured one (samples^2).
``esr``, ``l1``   time domain on random crops: error-to-signal ratio, mean absolute error.
``ncc``           time domain: negative normalized cross-correlation at lag 0.
``complex_stft``  multi-resolution complex STFT distance (sees phase).
``parallel_mix``  the comb-filter loss of the paper (|X| + |Y| against |X + Y|).

The frequency-domain losses weigh each frequency by ``weighting``: ``"coherence"`` (each
frequency where the wet is a linear function of the dry counts alike: the phase response is
fitted over the whole band) or ``"cross_power"`` (each frequency by how much it contributes to
the sum of dry and wet: what the parallel-mix test measures).

Validation runs the whole pair and logs the parallel-mix test (``val/comb_loss_db``,
``val/ncc``), the wrapped phase loss (``val/loss``), the weighted phase error in degrees, and
a figure of the phase responses and group delays. At the end of ``fit`` the alignment is
written into the run folder as ``<export_stem>.json`` (:mod:`diffx.io.phase_alignment`) and
``<export_stem>.png``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
import torch
from torch import nn

from diffx._validation import check_integer, check_sample_rate
from diffx.analysis.allpass_fit import (
    DESIGN_DELAYS,
    fit_allpass_phase,
    fit_pair,
    response_weights,
)
from diffx.analysis.phase_alignment import (
    DelayEstimate,
    MixReport,
    ResponseEstimate,
    apply_delay,
    fractional_delay_estimate,
    integer_delay,
    max_lag_samples,
    parallel_mix,
)
from diffx.data.phase_alignment import PhaseAlignmentDataModule
from diffx.io.phase_alignment import Alignment, save_alignment
from diffx.losses import ESRLoss
from diffx.losses.phase import (
    ComplexSTFTLoss,
    GroupDelayLoss,
    NCCLoss,
    ParallelMixLoss,
    PhaseResponseLoss,
)
from diffx.nn.biasnet import BiasNet
from diffx.tasks.base import AudioTask, check_loss_weights

FREQUENCY_LOSSES = ("phase", "group_delay")
TIME_LOSSES = ("esr", "l1", "ncc", "complex_stft", "parallel_mix")
LOSSES = FREQUENCY_LOSSES + TIME_LOSSES
WEIGHTINGS = ("coherence", "cross_power")
INITS = ("fit", "network")
MAX_UNDO_BULK = 512
"""Largest bulk lag (samples) also undone by the fit start: an allpass's own delay is
shorter; a longer lag is latency."""


def shift(x: torch.Tensor, delay_samples: torch.Tensor) -> torch.Tensor:
    """Delay ``(..., samples)`` audio by a scalar tensor of samples, either sign.

    The fractional part is a linear phase on an FFT padded past twice the length (no
    wrap-around; differentiable in ``delay_samples``); the integer part is an exact shift with
    zeros filled in. The length is kept.
    """
    n = x.shape[-1]
    whole = int(math.floor(float(delay_samples.detach())))
    frac = delay_samples - whole
    # The FFT size of diffx.analysis.phase_alignment.apply_delay, so the task and the exported
    # alignment interpolate identically.
    size = scipy.fft.next_fast_len(2 * n + 1, real=True)
    k = torch.arange(size // 2 + 1, device=x.device, dtype=x.dtype)
    phase = -2 * math.pi * k * frac.to(x.dtype) / size
    if size % 2 == 0:
        # The Nyquist bin of a real signal stays real: keep cos of its phase (as apply_delay).
        rotation = torch.complex(torch.cos(phase), torch.sin(phase) * (k < size // 2))
    else:
        rotation = torch.complex(torch.cos(phase), torch.sin(phase))
    y = torch.fft.irfft(torch.fft.rfft(x, size) * rotation, size)[..., :n]
    if whole > 0:
        y = nn.functional.pad(y[..., : max(n - whole, 0)], (min(whole, n), 0))
    elif whole < 0:
        y = nn.functional.pad(y[..., min(-whole, n) :], (0, min(-whole, n)))
    return y


class PhaseAlignment(AudioTask):
    """Fit an allpass cascade (and a residual delay) that aligns a dry signal to a wet one.

    Args:
        sample_rate: Hz (linked from the data module by the CLI).
        cascade: the :class:`diffx.nn.BiasNet` to fit (default: four second-order sections).
        losses: ``{name: weight}`` from :data:`LOSSES` (module notes).
        learning_rate: Adam step size of the cascade's networks.
        delay_learning_rate: Adam step size of the residual delay (samples per step); 0 keeps
            the delay at the data module's integer lag.
        unwrapped_steps: steps of the ``phase`` loss on unwrapped phases before it switches to
            wrapped ones (with ``init="network"``; a fit start uses wrapped ones throughout).
        weighting: ``"coherence"`` or ``"cross_power"`` (module notes).
        min_freq_hz, max_freq_hz: band of the frequency-domain losses and the phase error.
        fft_sizes: of the ``complex_stft`` and ``parallel_mix`` losses.
        export_stem: file stem of the exported alignment (``None``: no export).
        init: ``"fit"`` or ``"network"``: where training starts (module notes).
        measurement: returns ``(response, bulk)``, the pair's measured transfer function
            (:class:`~diffx.analysis.phase_alignment.ResponseEstimate`) and the bulk alignment the
            dry was shifted by (:class:`~diffx.analysis.phase_alignment.DelayEstimate`); called at
            :meth:`setup`, when the data is set up. The diffx CLI links the data module's
            (:func:`diffx.tasks.links.link_data_to_model`); in Python pass
            ``measurement=data.measurement`` for a
            :class:`diffx.data.PhaseAlignmentDataModule` ``data``. Without it, call
            :meth:`set_target` before training.
    """

    def __init__(
        self,
        sample_rate: int = 44100,
        cascade: BiasNet | None = None,
        losses: dict[str, float] | None = None,
        learning_rate: float = 1e-4,
        delay_learning_rate: float = 1e-2,
        unwrapped_steps: int = 300,
        weighting: str = "coherence",
        min_freq_hz: float = 20.0,
        max_freq_hz: float = 20000.0,
        fft_sizes: tuple[int, ...] = (2048, 1024, 512),
        export_stem: str | None = "alignment",
        init: str = "fit",
        measurement: Callable[[], tuple[ResponseEstimate, DelayEstimate]] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["cascade", "measurement"])
        self.sample_rate = int(check_sample_rate(sample_rate))
        self.cascade = cascade if cascade is not None else BiasNet(self.sample_rate)
        if self.cascade.sample_rate != self.sample_rate:
            raise ValueError(
                f"cascade.sample_rate={self.cascade.sample_rate} but the task runs at "
                f"{self.sample_rate} Hz"
            )
        self.losses = check_loss_weights({"phase": 1.0} if losses is None else losses, LOSSES)
        for name, value in (("learning_rate", learning_rate),
                            ("delay_learning_rate", delay_learning_rate)):  # fmt: skip
            if not value >= 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.learning_rate, self.delay_learning_rate = learning_rate, delay_learning_rate
        self.unwrapped_steps = check_integer(unwrapped_steps, "unwrapped_steps", 0)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.weighting = weighting
        if not 0 <= min_freq_hz < max_freq_hz:
            raise ValueError(
                f"need 0 <= min_freq_hz < max_freq_hz, got {min_freq_hz}, {max_freq_hz}"
            )
        self.min_freq_hz, self.max_freq_hz = float(min_freq_hz), float(max_freq_hz)
        self.export_stem = export_stem
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.init = init
        self.measurement = measurement
        # The residual delay in samples; the bulk lag and polarity come from the data module
        # and are kept as buffers so a checkpoint holds the whole alignment.
        self.delay = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.register_buffer("bulk_delay", torch.zeros((), dtype=torch.float64))
        self.register_buffer("polarity", torch.ones((), dtype=torch.float64))
        # The fit may find the wet inverted relative to the bulk polarity (a cascade's phase
        # can make the cross-correlation peak pick the wrong sign).
        self.register_buffer("flip", torch.ones((), dtype=torch.float64))
        self.loss_fns = nn.ModuleDict({
            "esr": ESRLoss(),
            "ncc": NCCLoss(),
            "complex_stft": ComplexSTFTLoss(fft_sizes),
            "parallel_mix": ParallelMixLoss(self.sample_rate, fft_sizes),
        })  # fmt: skip
        self.target: dict[str, torch.Tensor] | None = None
        self._fit_weight: np.ndarray | None = None

    # ----------------------------------------------------------------------------------------
    # targets from the data module

    def set_target(self, response, bulk_delay: float = 0.0, polarity: int = 1) -> None:
        """Take the measured response (:class:`diffx.analysis.phase_alignment.ResponseEstimate`)
        and the bulk alignment the dry was shifted by."""
        f = response.freqs_hz
        band = (f >= max(self.min_freq_hz, 1e-9)) & (f <= min(self.max_freq_hz,
                                                              0.5 * self.sample_rate))  # fmt: skip
        if band.sum() < 2:
            raise ValueError(
                f"no measured frequencies in [{self.min_freq_hz}, {self.max_freq_hz}] Hz"
            )
        weight = response.coherence if self.weighting == "coherence" else response.cross_power
        weight = weight[band]
        if not weight.sum() > 0:
            raise ValueError(
                "the dry and wet share no coherent energy in the fitted band: is the wet a "
                "processed copy of the dry?"
            )
        unwrapped = response.unwrapped_phase_rad(band)
        omega = 2 * np.pi * f[band] / self.sample_rate
        # Group delay -d(phase)/d(omega) by central differences of the unwrapped phase.
        delay = -np.gradient(unwrapped, omega)
        as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
        self.target = {
            "freqs_hz": as_t(f[band]),
            "phase": as_t(response.phase_rad[band]),
            "unwrapped": as_t(unwrapped),
            "group_delay": as_t(delay),
            "weight": as_t(weight / weight.sum()),
            "coherence": as_t(response.coherence[band]),
        }
        self.bulk_delay.fill_(float(bulk_delay))
        self.polarity.fill_(float(polarity))
        self._fit_weight = response_weights(response)[band]

    @torch.no_grad()
    def initialize_from_fit(self) -> None:
        """Set the cascade, the delay and the polarity to the global fit of the target within
        the cascade's structure (module notes); needs :meth:`set_target` first."""
        if self.target is None:
            raise RuntimeError("no target: call set_target() first")
        c = self.cascade
        stretched = c.kind == "warped_stretched"
        max_real = 0 if stretched else c.n_first
        f = self.target["freqs_hz"].cpu().numpy()
        inside = (f > 0) & (f < self.sample_rate / 2)
        # The bulk lag is the cross-correlation peak; an allpass with a large low-frequency
        # group delay peaks late, and from there what is left to fit is an advance. So the
        # fit also starts from no lag at all (residual delays around -bulk), as diffx align
        # does.
        delays = DESIGN_DELAYS
        bulk = int(self.bulk_delay)
        if bulk and abs(bulk) <= MAX_UNDO_BULK:
            delays = delays + tuple(d - bulk for d in DESIGN_DELAYS)
        fit = fit_allpass_phase(
            f[inside], self.target["phase"].cpu().numpy()[inside], self._fit_weight[inside],
            self.sample_rate, max_poles=2 * c.n_second + max_real, max_pairs=c.n_second,
            max_real=max_real, delays=delays,
        )  # fmt: skip
        params = fit.params()
        c.set_sections(params.get("pole_radius", []), params.get("freq_hz", []),
                       [] if stretched else params.get("first_order_coeff", []))  # fmt: skip
        # Sections the fit does not use are pure delays (radius 0: z^-2; coefficient 0:
        # z^-1, or z^-stretch when stretched); the residual delay takes them back.
        unused = 2 * (c.n_second - fit.n_second) + (
            (c.stretch or 1) * c.n_first if stretched else c.n_first - fit.n_first
        )
        self.delay.fill_(fit.delay_samples - unused)
        self.flip.fill_(float(fit.polarity))

    def setup(self, stage: str) -> None:
        if self.measurement is not None:
            response, bulk = self.measurement()
            self.set_target(response, bulk.delay_samples, bulk.polarity)
        elif self.target is None:
            raise ValueError(
                "PhaseAlignment needs the pair's measurement: PhaseAlignment(..., "
                "measurement=data.measurement) for a PhaseAlignmentDataModule data (the diffx "
                "CLI links it), or set_target() before training"
            )
        # Only when fitting: a checkpoint restored afterwards (resuming, or a later
        # validate/test) keeps what training made of it.
        if stage == "fit" and self.init == "fit":
            self.initialize_from_fit()

    # ----------------------------------------------------------------------------------------
    # the model

    def model_phase(self, freqs_hz: torch.Tensor) -> torch.Tensor:
        """Phase of ``A(z) z^-d`` at ``freqs_hz``, radians (unwrapped, from 0 at 0 Hz)."""
        omega = 2 * math.pi * freqs_hz / self.sample_rate
        flip = math.pi * (1 - self.flip) / 2  # 0, or pi when inverted
        return self.cascade.phase_response(freqs_hz) - omega * self.delay + flip

    def model_group_delay(self, freqs_hz: torch.Tensor) -> torch.Tensor:
        """Group delay of ``A(z) z^-d`` in samples."""
        return self.cascade.group_delay(freqs_hz) + self.delay

    def forward(self, dry_shifted: torch.Tensor) -> torch.Tensor:
        """Align ``(batch, 1, samples)`` dry audio that the bulk lag has already shifted."""
        y = self.cascade.filter(dry_shifted.to(torch.float64))
        return (self.flip * shift(y, self.delay)).to(dry_shifted.dtype)

    # ----------------------------------------------------------------------------------------
    # training

    def _frequency_losses(self) -> dict[str, torch.Tensor]:
        t = self.target
        out = {}
        if "phase" in self.losses:
            phase = self.model_phase(t["freqs_hz"])
            # A fit start already has every section at its turn of the phase; the unwrapped
            # bowl (anchored by the measurement's unwrapping, not the fit's) would pull it away.
            unwrapped = self.init != "fit" and self.global_step < self.unwrapped_steps
            target = t["unwrapped"] if unwrapped else t["phase"]
            out["phase"] = PhaseResponseLoss(wrapped=not unwrapped)(phase, target, t["weight"])
        if "group_delay" in self.losses:
            delay = self.model_group_delay(t["freqs_hz"])
            out["group_delay"] = GroupDelayLoss()(delay, t["group_delay"], t["weight"])
        return out

    def _time_losses(self, dry: torch.Tensor, wet: torch.Tensor) -> dict[str, torch.Tensor]:
        names = [n for n in TIME_LOSSES if n in self.losses]
        if not names:
            return {}
        pred = self(dry.to(torch.float64))
        wet = wet.to(torch.float64)
        out = {}
        for name in names:
            if name == "l1":
                out[name] = (pred - wet).abs().mean()
            else:
                out[name] = self.loss_fns[name](pred, wet)
        return out

    def training_step(self, batch, batch_idx):
        if self.target is None:
            raise RuntimeError("no target: call set_target() or train with the data module")
        for key in ("freqs_hz", "phase", "unwrapped", "group_delay", "weight", "coherence"):
            self.target[key] = self.target[key].to(self.device)
        parts = self._frequency_losses()
        parts.update(self._time_losses(batch["dry"], batch["wet"]))
        loss = sum(self.losses[name] * value for name, value in parts.items())
        for name, value in parts.items():
            self.log(f"train/{name}", value.detach().float())
        self.log("train/loss", loss.detach().float(), prog_bar=True)
        self.log("train/delay_samples", self.delay.detach().float())
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam([
            {"params": self.cascade.parameters(), "lr": self.learning_rate},
            {"params": [self.delay], "lr": self.delay_learning_rate},
        ])  # fmt: skip

    # ----------------------------------------------------------------------------------------
    # validation and export

    def phase_error_deg(self) -> float:
        """Weighted RMS of the wrapped phase error against the measured phase, in degrees."""
        t = self.target
        with torch.no_grad():
            diff = torch.angle(torch.exp(1j * (self.model_phase(t["freqs_hz"]) - t["phase"])))
            return math.degrees(float(torch.sqrt((t["weight"] * diff.square()).sum())))

    def validation_step(self, batch, batch_idx):
        dry, wet = batch["dry"], batch["wet"]
        with torch.no_grad():
            aligned = self(dry)
        before = parallel_mix(dry[0, 0], wet[0, 0])
        after = parallel_mix(aligned[0, 0], wet[0, 0])
        t = self.target
        with torch.no_grad():
            wrapped = PhaseResponseLoss()(self.model_phase(t["freqs_hz"]), t["phase"], t["weight"])
        # val/loss: the wrapped phase loss against the measured phase (what training ends on).
        self.log("val/loss", float(wrapped), batch_size=1)
        self.log("val/comb_loss_db", after.comb_loss_db, prog_bar=True, batch_size=1)
        self.log("val/ncc", after.ncc, batch_size=1)
        self.log("val/comb_loss_db_bulk_only", before.comb_loss_db, batch_size=1)
        self.log("val/phase_error_deg", self.phase_error_deg(), batch_size=1)
        self.log("val/delay_samples", float(self.bulk_delay + self.delay.detach()), batch_size=1)
        if batch_idx == 0:
            self.log_figure("val/phase_response", self.figure())
            seconds = min(dry.shape[-1], 5 * self.sample_rate)
            self.log_audio("val/mix_aligned", 0.5 * (aligned + wet)[0, 0, :seconds])
            self.log_audio("val/mix_bulk_delay_only", 0.5 * (dry + wet)[0, 0, :seconds])

    def alignment(self, report: dict | None = None) -> Alignment:
        """The fitted alignment (total delay = the bulk lag plus the residual ``d``)."""
        cascade = self.cascade.to_dict()
        return Alignment(
            sample_rate=self.sample_rate,
            polarity=int(self.polarity * self.flip),
            delay_samples=float(self.bulk_delay + self.delay.detach()),
            sos=np.asarray(cascade["sos"]),
            kind=cascade["kind"],
            stretch=cascade["stretch"],
            params=cascade["params"],
            report=report or {},
        )

    def figure(self, path: str | Path | None = None):
        """Phase and group delay of the fitted filter against the measurement."""
        from diffx.analysis.plots import plot_phase_alignment

        t = self.target
        with torch.no_grad():
            phase = self.model_phase(t["freqs_hz"])
            delay = self.model_group_delay(t["freqs_hz"])
        return plot_phase_alignment(
            t["freqs_hz"].cpu().numpy(),
            t["phase"].cpu().numpy(),
            phase.cpu().numpy(),
            t["group_delay"].cpu().numpy(),
            delay.cpu().numpy(),
            t["coherence"].cpu().numpy(),
            sample_rate=self.sample_rate,
            path=path,
        )

    def on_fit_end(self) -> None:
        run_dir = self.run_dir()
        if self.export_stem is None or run_dir is None or self.global_rank != 0:
            return
        path = save_alignment(self.alignment(), run_dir / f"{self.export_stem}.json")
        self.figure(run_dir / f"{self.export_stem}.png")
        print(f"exported the alignment to {path}")


# -- aligning a recorded pair ------------------------------------------------------------


CLIP_LEVEL = 0.999
"""Samples at or above this magnitude count as clipped."""


@dataclass
class ChannelResult:
    """One channel's alignment and its parallel-mix tests (dry as given, integer delay, full)."""

    alignment: Alignment
    before: MixReport
    integer_delay: MixReport
    after: MixReport


def clipped_fraction(audio: torch.Tensor) -> float:
    """Share of samples in runs of at least 3 consecutive samples at full scale."""
    at_limit = (audio.abs() >= CLIP_LEVEL).numpy()
    if not at_limit.any():
        return 0.0
    run = at_limit[..., 2:] & at_limit[..., 1:-1] & at_limit[..., :-2]
    return float(run.sum()) / at_limit.size


def check_layout(dry: torch.Tensor, wet: torch.Tensor, dry_name="dry", wet_name="wet") -> None:
    """Refuse what cannot be aligned channel by channel, naming the culprit: channel counts
    that neither match nor have a mono side, and silent channels. Both ``(channels, samples)``.
    """
    channels = max(dry.shape[0], wet.shape[0])
    if dry.shape[0] not in (1, channels) or wet.shape[0] not in (1, channels):
        raise ValueError(
            f"{dry_name} has {dry.shape[0]} channels and {wet_name} {wet.shape[0]}: give "
            "equal channel counts, or a mono file on one side"
        )
    for name, audio in ((dry_name, dry), (wet_name, wet)):
        for c in range(audio.shape[0]):
            if not bool(audio[c].abs().max() > 0):
                raise ValueError(f"{name} is silent (channel {c}): there is nothing to align")


def _fit_once(
    dry, wet, sample_rate, bulk, kind, n_second, n_first, stretch, steps, losses, learning_rate,
    delay_learning_rate, unwrapped_steps, weighting, seed, progress, log_dir,
):  # fmt: skip
    import pytorch_lightning as pl

    # Lightning's start-up lines (accelerators, tips) would repeat for every fit.
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.manual_seed(seed)
    data = PhaseAlignmentDataModule.from_tensors(
        dry.reshape(1, -1), wet.reshape(1, -1), sample_rate,
        bulk_delay_samples=int(bulk.delay_samples), polarity=bulk.polarity, seed=seed,
    )  # fmt: skip
    cascade = BiasNet(sample_rate, kind, n_second=n_second, n_first=n_first, stretch=stretch)
    task = PhaseAlignment(
        sample_rate, cascade, losses=losses, learning_rate=learning_rate,
        delay_learning_rate=delay_learning_rate, unwrapped_steps=unwrapped_steps,
        weighting=weighting, export_stem=None, init="network", measurement=data.measurement,
    )  # fmt: skip
    logger = pl.loggers.TensorBoardLogger(str(log_dir), name="", version="") if log_dir else False
    with warnings.catch_warnings():
        # One pair, no validation loop, a fixed number of crops: Lightning's hints about
        # data-loader workers and missing validation do not apply.
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*val_dataloader.*")
        # A deprecation inside Lightning's own pytree helper, repeated at every fit.
        warnings.filterwarnings("ignore", ".*LeafSpec.*")
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, max_steps=steps, logger=logger,
            enable_checkpointing=False, enable_progress_bar=progress,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
            log_every_n_steps=50,
        )  # fmt: skip
        trainer.fit(task, datamodule=data)
    return task


def bulk_candidates(dry, wet, sample_rate: int, max_delay_ms: float) -> list[DelayEstimate]:
    """Where the cascade may start: the cross-correlation peak, and no delay with either
    polarity.

    The peak is not always the right start. An allpass with a large group delay at low
    frequencies correlates best with its input several samples late; starting there leaves
    the cascade a phase it cannot produce (an advance), while starting at lag 0 it can match
    the phase exactly. A tonal signal also correlates about as well one period later.
    """
    peak = integer_delay(dry, wet, max_delay_samples=max_lag_samples(max_delay_ms, sample_rate))
    candidates = [peak]
    for polarity in (1, -1):
        if (peak.delay_samples, peak.polarity) != (0.0, polarity):
            candidates.append(DelayEstimate(0.0, polarity, 0.0))
    return candidates


def fit_channel(
    dry: torch.Tensor,
    wet: torch.Tensor,
    sample_rate: int,
    kind: str = "second_order",
    n_second: int = 4,
    n_first: int = 0,
    stretch: int | None = None,
    steps: int = 1000,
    losses: dict[str, float] | None = None,
    learning_rate: float = 1e-4,
    delay_learning_rate: float = 1e-3,
    unwrapped_steps: int = 500,
    weighting: str = "cross_power",
    max_delay_ms: float = 100.0,
    search_bulk: bool = True,
    fallback_to_delay: bool = True,
    seed: int = 0,
    progress: bool = True,
    log_dir: str | Path | None = None,
):
    """Fit one channel: ``dry`` and ``wet`` ``(samples,)`` or ``(1, samples)``, same length.

    With ``search_bulk`` the cascade is fitted from each of :func:`bulk_candidates` and the fit
    whose aligned dry loses least energy in the parallel mix with the wet (the comb-filter
    loss on the whole signal) is kept; otherwise it starts from the cross-correlation peak.
    With ``fallback_to_delay``, when the best delay alone (cross-correlation peak refined to a
    fraction of a sample) sums better than every cascade, as for effects whose phase leads
    (an allpass can only lag), that delay is returned with no sections. Other arguments configure
    :class:`diffx.nn.BiasNet` and :class:`diffx.tasks.PhaseAlignment`.

    Returns:
        ``(alignment, task)``: the :class:`~diffx.io.phase_alignment.Alignment` and the trained
        task (for its figure and targets).
    """
    candidates = bulk_candidates(dry.reshape(-1), wet.reshape(-1), sample_rate, max_delay_ms)
    if not search_bulk:
        candidates = candidates[:1]
    best, best_score = None, math.inf
    for bulk in candidates:
        task = _fit_once(
            dry, wet, sample_rate, bulk, kind, n_second, n_first, stretch, steps, losses,
            learning_rate, delay_learning_rate, unwrapped_steps, weighting, seed, progress,
            log_dir,
        )  # fmt: skip
        aligned = task.alignment().apply(dry.reshape(-1).double().numpy())
        score = -parallel_mix(aligned, wet.reshape(-1)).comb_loss_db
        if score < best_score:
            best, best_score = task, score
    alignment = best.alignment()
    if fallback_to_delay:
        x = dry.reshape(-1).double().numpy()
        max_lag = max_lag_samples(max_delay_ms, sample_rate)
        delay = fractional_delay_estimate(x, wet.reshape(-1), max_delay_samples=max_lag)
        delayed = apply_delay(x, delay.delay_samples, delay.polarity)
        if -parallel_mix(delayed, wet.reshape(-1)).comb_loss_db < best_score:
            alignment = Alignment(sample_rate, delay.polarity, delay.delay_samples,
                                  np.zeros((0, 6)), kind="none")  # fmt: skip
    return alignment, best


METHODS = ("fit", "biasnet")


def fit_channel_direct(
    dry: torch.Tensor,
    wet: torch.Tensor,
    sample_rate: int,
    max_sections: int = 8,
    weighting: str = "auto",
    max_delay_ms: float = 100.0,
    fallback_to_delay: bool = True,
) -> Alignment:
    """Fit one channel with :func:`diffx.analysis.allpass_fit.fit_pair` (``--method fit``):
    ``dry`` and ``wet`` ``(samples,)``, same length. Deterministic."""
    fit = fit_pair(
        dry.reshape(-1).double().numpy(), wet.reshape(-1).double().numpy(), sample_rate,
        max_sections=max_sections, weighting=weighting,
        max_delay_samples=max_lag_samples(max_delay_ms, sample_rate),
        fallback_to_delay=fallback_to_delay,
    )  # fmt: skip
    return Alignment.from_fit(fit)


def align(
    dry: torch.Tensor,
    wet: torch.Tensor,
    sample_rate: int,
    method: str = "fit",
    try_first_order: bool = True,
    **fit_kwargs,
) -> list[ChannelResult]:
    """Align every channel: ``dry`` ``(1 or C, samples)`` to ``wet`` ``(1 or C, samples)``.

    A mono side is used for every channel of the other; equal lengths are required.

    ``method="fit"`` (default): keyword arguments go to :func:`fit_channel_direct`.
    ``method="biasnet"``: they go to :func:`fit_channel`; with ``try_first_order`` a single
    first-order section is fitted too and kept when it sums better (on effects whose phase
    leads it often beats larger second-order cascades, which fall into local minima there).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if dry.shape[-1] != wet.shape[-1]:
        raise ValueError(f"dry and wet differ in length: {dry.shape[-1]} and {wet.shape[-1]}")
    check_layout(dry, wet)
    max_lag = max_lag_samples(fit_kwargs.get("max_delay_ms", 100.0), sample_rate)
    results = []
    for c in range(max(dry.shape[0], wet.shape[0])):
        x = dry[min(c, dry.shape[0] - 1)].double()
        y = wet[min(c, wet.shape[0] - 1)].double()
        if method == "fit":
            alignment = fit_channel_direct(x, y, sample_rate, **fit_kwargs)
        else:
            alignment, _ = fit_channel(x, y, sample_rate, **fit_kwargs)
        after = parallel_mix(alignment.apply(x.numpy()), y)
        if (method == "biasnet" and try_first_order
                and fit_kwargs.get("kind", "second_order") != "first_order"):  # fmt: skip
            simple = {**fit_kwargs, "kind": "first_order", "n_second": 0, "n_first": 1}
            other, _ = fit_channel(x, y, sample_rate, **simple)
            other_mix = parallel_mix(other.apply(x.numpy()), y)
            if other_mix.comb_loss_db > after.comb_loss_db:
                alignment, after = other, other_mix
        bulk = integer_delay(x, y, max_delay_samples=max_lag)
        delayed = apply_delay(x, bulk.delay_samples, bulk.polarity)
        results.append(ChannelResult(
            alignment=alignment,
            before=parallel_mix(x, y),
            integer_delay=parallel_mix(delayed, y),
            after=after,
        ))  # fmt: skip
    return results
