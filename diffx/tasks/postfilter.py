"""GAN post-filter for predicted acoustic features (Kaneko et al., "Generative adversarial
network-based postfilter for statistical parametric speech synthesis", ICASSP 2017; the
STFT-spectrogram variant, Interspeech 2017), trained as NNSVS trains it.

One :class:`~diffx.nn.Conv2dPostFilter` generator and one :class:`~diffx.nn.Conv2dDiscriminator`
per stream in ``train_streams`` (NNSVS recommends one stream per run, ``mgc`` then ``bap``, and
merging the two: ``diffx postfilter merge``). Features are standardized with the natural
training features' scaler; dims below a stream's offset pass unchanged (``mgc``: 2).

Losses (least-squares GAN): the discriminator learns ``(D(natural) - 1)^2 + D(generated)^2``;
the generator ``adv_weight * (1 - D(generated))^2 + fm_weight * feature matching (L1 between
the discriminator's hidden maps of natural and generated) + mse_weight * MSE``. With
``vuv_mask`` the discriminator sees voiced frames only (the others zeroed), as in NNSVS.
Adam (1e-4, betas 0.5/0.9), StepLR (halved every 50 epochs), gradients clipped to norm 1.

Validation and test compare, on whole held-out utterances, the prediction without a
post-filter (``none``), the GV post-filter (``gv``, statistics of the natural training data)
and the GAN post-filter (``gan``, eval mode: noise smoothed over ``smoothed_width`` frames):

- ``<stage>/<variant>/<stream>_gv_ratio_db``: mean over the filtered dims of the GV ratio in
  dB (0 dB: natural variance; below: over-smoothed), voiced frames;
- ``<stage>/<variant>/mcd_db`` (when ``mgc`` is trained): mel-cepstral distortion, voiced;
- ``<stage>/<variant>/<stream>_ms_distance_db``: modulation-spectrum distance;
- ``<stage>/loss``: the GAN's modulation-spectrum distance averaged over the trained streams
  (what checkpoints monitor: it falls as the GV and the temporal fine structure approach
  natural speech's).

Audio (WORLD synthesis of natural, predicted, GV- and GAN-post-filtered features of the first
utterance) and a GV/spectrogram figure go to the run's loggers (:meth:`AudioTask.log_audio`).

At the end of fitting, the run folder receives ``postfilter.pt`` (the generators with their
scaler, for ``diffx postfilter apply`` and ``merge``; the weights of the best checkpoint on
``val/loss`` when a checkpoint callback monitors it, else the final ones), ``scaler.npz``,
``gv.npz`` (the GV post-filter) and ``streams.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from diffx.analysis.acoustic import (
    WorldSettings,
    gv_ratio_db,
    mel_cepstral_distortion_db,
    mgc_to_log_spectrum_db,
    modulation_spectrum_distance_db,
    world_synthesis,
)
from diffx.analysis.plots import plot_postfilter
from diffx.data.postfilter import FeatureScaler, FeatureStatistics
from diffx.functional.postfilter import StreamLayout
from diffx.nn.postfilter import (
    Conv2dDiscriminator,
    Conv2dPostFilter,
    GVPostFilter,
    MultiStreamPostFilter,
)
from diffx.tasks.base import AudioTask, all_gather_objects

STREAM_DEFAULTS = {
    "mgc": {
        "offset": 2,
        "channels": 64,
        "kernel_size": [5, 5],
        "noise_type": "frame_wise",
        "smoothed_width": 100,
        "disc_channels": 32,
        "disc_kernel_size": [7, 3],
        "disc_padding": [0, 0],
    },
    "bap": {
        "offset": 0,
        "channels": 32,
        "kernel_size": [5, 1],
        "noise_type": "bin_wise",
        "smoothed_width": 5,
        "disc_channels": 16,
        "disc_kernel_size": [7, 3],
        "disc_padding": None,
    },
}
"""Per-stream settings of NNSVS's recipes (``postfilter_mgc.yaml``, ``postfilter_bap.yaml``);
other streams start from the ``bap`` settings."""

SETTING_KEYS = (
    "offset",
    "channels",
    "kernel_size",
    "noise_type",
    "noise_scale",
    "smoothed_width",
    "disc_channels",
    "disc_kernel_size",
    "disc_padding",
)
VARIANTS = ("none", "gv", "gan")
DEFAULT_STREAMS = {"mgc": 60, "lf0": 1, "vuv": 1, "bap": 1}


@contextlib.contextmanager
def _frozen(module: nn.Module):
    """``module``'s parameters with ``requires_grad`` off inside, restored after."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def stream_settings(name: str, overrides: dict | None) -> dict:
    """NNSVS's settings for stream ``name`` updated with ``overrides``.

    Raises:
        ValueError: an unknown key.
    """
    settings = dict(STREAM_DEFAULTS.get(name, STREAM_DEFAULTS["bap"]))
    settings.setdefault("noise_scale", 1.0)
    unknown = sorted(set(overrides or {}) - set(SETTING_KEYS))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for stream {name!r}; known: {SETTING_KEYS}")
    settings.update(overrides or {})
    return settings


class GANPostFilter(AudioTask):
    """GAN post-filter training (see the module docs).

    Args:
        streams: ``{name: size}`` of the features, in order (must match the data's).
        train_streams: the streams to post-filter, each with its own generator and
            discriminator.
        settings: per-stream overrides of :data:`STREAM_DEFAULTS` (``offset``, ``channels``,
            ``kernel_size``, ``noise_type``, ``noise_scale``, ``smoothed_width``,
            ``disc_channels``, ``disc_kernel_size``, ``disc_padding``: ``[0, 0]`` for
            ``mgc`` as in NNSVS's recipe, which needs segments of at least 97 frames;
            ``null`` keeps the plane's size).
        adv_weight, fm_weight, mse_weight: generator loss weights (NNSVS: 1, 10, 0).
        learning_rate, betas: Adam's, for both networks.
        lr_step_epochs, lr_gamma: StepLR.
        clip_norm: gradient-norm clip of both networks.
        vuv_mask: the discriminator sees voiced frames only.
        gv_strength: strength of the GV post-filter it is compared with.
        example_seconds: length of the audio examples logged.
        channels_last: store the generators' and discriminators' convolution weights in the
            channels-last memory format, so that every convolution runs channels-last, and
            convolve the generator's input plane apart from its hidden maps (see
            :class:`~diffx.nn.Conv2dPostFilter`): about 1.3x faster training steps on CPU
            (oneDNN; ``benchmarks/bench_postfilter.py``). Float32 rounding differs from the
            default: outputs ~1e-6 relative, parameter gradients up to ~3e-4 relative per
            tensor (the order of either path's own float32 error against float64). Off, a
            step computes bit for bit what NNSVS's ``train_step`` does.
        training_statistics: returns the training features' statistics
            (:class:`diffx.data.postfilter.FeatureStatistics`: stream layout, WORLD settings,
            scaler, natural GV), which fitting from step 0 needs: features are standardized
            with the scaler and the GV post-filter uses the GV. Called when fitting starts (the
            data is set up by then); a resumed run keeps the checkpoint's. The diffx CLI links
            it (:func:`diffx.tasks.links.link_data_to_model`); in Python pass
            ``training_statistics=data.statistics`` for a
            :class:`diffx.data.PostFilterDataModule` ``data``.
    """

    def __init__(
        self,
        streams: dict[str, int] | None = None,
        train_streams: Sequence[str] = ("mgc",),
        settings: dict[str, dict] | None = None,
        adv_weight: float = 1.0,
        fm_weight: float = 10.0,
        mse_weight: float = 0.0,
        learning_rate: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        lr_step_epochs: int = 50,
        lr_gamma: float = 0.5,
        clip_norm: float = 1.0,
        vuv_mask: bool = True,
        gv_strength: float = 1.0,
        example_seconds: float = 4.0,
        channels_last: bool = False,
        training_statistics: Callable[[], FeatureStatistics] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["training_statistics"])
        self.automatic_optimization = False
        self.layout = StreamLayout.from_dict(dict(streams or DEFAULT_STREAMS))
        self.train_streams = list(train_streams)
        if not self.train_streams or len(set(self.train_streams)) != len(self.train_streams):
            raise ValueError(f"train_streams must name distinct streams, got {train_streams}")
        unknown = [s for s in self.train_streams if s not in self.layout.names]
        if unknown:
            raise ValueError(
                f"train_streams {unknown} are not in streams {list(self.layout.names)}"
            )
        extra = sorted(set(settings or {}) - set(self.train_streams))
        if extra:
            raise ValueError(f"settings for streams {extra} that are not trained")
        for name, value in (
            ("adv_weight", adv_weight),
            ("fm_weight", fm_weight),
            ("mse_weight", mse_weight),
        ):
            if not (0 <= value < math.inf):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if adv_weight + fm_weight + mse_weight == 0:
            raise ValueError("at least one of adv_weight, fm_weight, mse_weight must be > 0")
        if learning_rate <= 0 or lr_step_epochs < 1 or not 0 < lr_gamma <= 1 or clip_norm <= 0:
            raise ValueError(
                "learning_rate, lr_step_epochs, lr_gamma (0, 1], clip_norm must be > 0"
            )
        self.settings = {s: stream_settings(s, (settings or {}).get(s)) for s in self.train_streams}
        generators, discriminators, offsets = {}, {}, {}
        for name in self.train_streams:
            cfg = self.settings[name]
            size = self.layout.sizes[self.layout.names.index(name)]
            if not 0 <= int(cfg["offset"]) < size:
                raise ValueError(f"offset of {name!r} must be in [0, {size}), got {cfg['offset']}")
            offsets[name] = int(cfg["offset"])
            generators[name] = Conv2dPostFilter(
                size - offsets[name],
                cfg["channels"],
                cfg["kernel_size"],
                cfg["noise_type"],
                cfg["noise_scale"],
                cfg["smoothed_width"],
            )
            discriminators[name] = Conv2dDiscriminator(
                cfg["disc_channels"], cfg["disc_kernel_size"], cfg["disc_padding"]
            )
            if discriminators[name].output_size(10**6, size - offsets[name])[1] < 1:
                raise ValueError(
                    f"the {name!r} stream's {size - offsets[name]} dims are too few for its "
                    f"discriminator's padding {cfg['disc_padding']}: set "
                    f"settings.{name}.disc_padding to null"
                )
        zeros = torch.zeros(self.layout.dims)
        self.postfilter = MultiStreamPostFilter(self.layout, generators, offsets, zeros, zeros + 1)
        self.discriminators = nn.ModuleDict(discriminators)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.postfilter.to(memory_format=torch.channels_last)
            self.discriminators.to(memory_format=torch.channels_last)
        self.register_buffer("global_variance", torch.ones(self.layout.dims))
        self.world: WorldSettings | None = None
        self.sample_rate = 16000
        self.adv_weight, self.fm_weight, self.mse_weight = adv_weight, fm_weight, mse_weight
        self.learning_rate, self.betas = learning_rate, tuple(betas)
        self.lr_step_epochs, self.lr_gamma, self.clip_norm = lr_step_epochs, lr_gamma, clip_norm
        self.vuv_mask, self.gv_strength = vuv_mask, gv_strength
        self.example_seconds = example_seconds
        self.training_statistics = training_statistics
        self._outputs: dict[str, list] = {}

    # -- data statistics ---------------------------------------------------------------------

    def on_fit_start(self) -> None:
        # A resumed run keeps the statistics in its checkpoint. (The trainer's step counter is
        # restored only after this hook, so it cannot tell.)
        resumed = self.trainer.ckpt_path is not None
        if self.training_statistics is None:
            if not resumed:
                raise ValueError(
                    "GANPostFilter needs the training features' statistics to start fitting: "
                    "GANPostFilter(..., training_statistics=data.statistics) for a "
                    "PostFilterDataModule data (the diffx CLI links them)"
                )
            return
        statistics = self.training_statistics()
        if not isinstance(statistics, FeatureStatistics):
            raise ValueError(
                f"training_statistics gave a {type(statistics).__name__}, not the "
                "FeatureStatistics of a PostFilterDataModule: GANPostFilter trains on one"
            )
        if statistics.layout != self.layout:
            raise ValueError(
                f"the data's streams {statistics.layout.to_dict()} differ from the model's "
                f"{self.layout.to_dict()} (set model.streams)"
            )
        if not resumed:
            scaler = statistics.scaler
            self.postfilter.mean.copy_(torch.as_tensor(scaler.mean, dtype=torch.float32))
            self.postfilter.scale.copy_(torch.as_tensor(scaler.scale, dtype=torch.float32))
            self.global_variance.copy_(
                torch.as_tensor(statistics.global_variance, dtype=torch.float32)
            )
        self.set_world(statistics.world)

    def set_world(self, world: WorldSettings | None) -> None:
        self.world = world
        if world is not None:
            self.sample_rate = int(world.sample_rate)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["world"] = self.world.to_dict() if self.world is not None else None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        world = checkpoint.get("world")
        self.set_world(WorldSettings(**world) if world else None)

    def scaler(self) -> FeatureScaler:
        scale = self.postfilter.scale.detach().cpu().double().numpy()
        return FeatureScaler(self.postfilter.mean.detach().cpu().double().numpy(), scale**2)

    def gv_postfilter(self) -> GVPostFilter:
        """The GV post-filter of the trained streams (same offsets), natural training GV."""
        return GVPostFilter(
            self.global_variance.cpu(),
            self.layout,
            dict(self.postfilter.offsets),
            self.gv_strength,
        ).to(self.global_variance.device)

    # -- training ----------------------------------------------------------------------------

    def configure_optimizers(self):
        opt_g = torch.optim.Adam(self.postfilter.parameters(), self.learning_rate, betas=self.betas)
        opt_d = torch.optim.Adam(
            self.discriminators.parameters(), self.learning_rate, betas=self.betas
        )
        schedulers = [
            torch.optim.lr_scheduler.StepLR(opt, self.lr_step_epochs, self.lr_gamma)
            for opt in (opt_g, opt_d)
        ]
        return [opt_g, opt_d], schedulers

    def _stream_dims(self, name: str) -> slice:
        span = self.layout.span(name)
        return slice(span.start + self.postfilter.offsets[name], span.stop)

    def _normalize(self, features: torch.Tensor, dims: slice) -> torch.Tensor:
        return (features[..., dims] - self.postfilter.mean[dims]) / self.postfilter.scale[dims]

    def _frame_weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(batch, frames, 1)``: 1 on real (not padded) frames, voiced ones with vuv_mask."""
        weights = batch["mask"].to(batch["natural"].dtype)
        if self.vuv_mask and "vuv" in self.layout.names:
            weights = weights * self.layout.voiced(batch["natural"])
        return weights[..., None]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        weights = self._frame_weights(batch)
        frames = batch["mask"].to(weights.dtype)[..., None]
        generated, real = {}, {}
        for name, generator in self.postfilter.filters.items():
            dims = self._stream_dims(name)
            generated[name] = generator(self._normalize(batch["predicted"], dims))
            real[name] = self._normalize(batch["natural"], dims)

        # Discriminator: natural -> 1, generated -> 0. Its hidden maps of the natural features
        # are kept for feature matching (as NNSVS does: maps of the discriminator before this
        # update, which saves running it on the natural features twice).
        loss_d = 0.0
        real_maps = {}
        for name, disc in self.discriminators.items():
            maps = disc(real[name] * weights)
            real_maps[name] = [m.detach() for m in maps[:-1]]
            d_fake = disc(generated[name].detach() * weights)[-1]
            loss_d = loss_d + ((maps[-1] - 1) ** 2).mean() + (d_fake**2).mean()
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        self.clip_gradients(opt_d, gradient_clip_val=self.clip_norm, gradient_clip_algorithm="norm")
        opt_d.step()

        # Generator: fool the discriminator, match its hidden maps, (optionally) the features.
        # The discriminators' parameters are frozen meanwhile: their gradients would only be
        # discarded (the next discriminator update zeroes them), and not computing them skips
        # the weight half of its backward convolutions.
        zero = batch["natural"].new_zeros(())
        loss_adv, loss_fm, loss_mse = zero, zero, zero
        with _frozen(self.discriminators):
            for name, disc in self.discriminators.items():
                fake_maps = disc(generated[name] * weights)
                loss_adv = loss_adv + ((1 - fake_maps[-1]) ** 2).mean()
                if self.fm_weight > 0:
                    pairs = zip(fake_maps[:-1], real_maps[name])
                    loss_fm = loss_fm + sum(F.l1_loss(f, r) for f, r in pairs)
                # The MSE is cheap: computed (and logged) whatever its weight.
                squared = (generated[name] - real[name]) ** 2 * frames
                count = (frames.sum() * squared.shape[-1]).clamp_min(1)
                loss_mse = loss_mse + squared.sum() / count
            loss_g = (
                self.adv_weight * loss_adv + self.fm_weight * loss_fm + self.mse_weight * loss_mse
            )
            opt_g.zero_grad()
            self.manual_backward(loss_g)
        self.clip_gradients(opt_g, gradient_clip_val=self.clip_norm, gradient_clip_algorithm="norm")
        opt_g.step()

        size = batch["natural"].shape[0]
        self.log_dict(
            {
                "train/loss_d": loss_d,
                "train/loss_adv": loss_adv,
                "train/loss_fm": loss_fm,
                "train/loss_mse": loss_mse,
                "train/loss_g": loss_g,
            },
            batch_size=size,
        )
        self.log("train/loss", loss_g, prog_bar=True, batch_size=size)

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()

    # -- evaluation --------------------------------------------------------------------------

    @torch.no_grad()
    def enhance(self, predicted: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
        """``{"none", "gv", "gan"}`` versions of raw ``predicted (batch, frames, dims)``; the
        GAN's noise is drawn from ``seed``."""
        generator = torch.Generator(device=predicted.device).manual_seed(seed)
        was_training = self.postfilter.training
        self.postfilter.eval()
        gan = self.postfilter(predicted, generator)
        self.postfilter.train(was_training)
        return {"none": predicted, "gv": self.gv_postfilter()(predicted), "gan": gan}

    def on_validation_epoch_start(self) -> None:
        self._outputs = {"natural": [], **{v: [] for v in VARIANTS}}

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        variants = self.enhance(batch["predicted"])
        self._outputs["natural"].append(batch["natural"][0].float().cpu().numpy())
        for name, features in variants.items():
            self._outputs[name].append(features[0].float().cpu().numpy())

    test_step = validation_step

    def metrics(self) -> dict[str, float]:
        """The module docs' measures from the utterances gathered in this evaluation."""
        natural = self._outputs["natural"]
        masks = None
        if "vuv" in self.layout.names:
            masks = [self.layout.voiced(u) for u in natural]
        results = {}
        for name in self.train_streams:
            dims = self._stream_dims(name)
            nat = [u[:, dims] for u in natural]
            for variant in VARIANTS:
                pred = [u[:, dims] for u in self._outputs[variant]]
                results[f"{variant}/{name}_gv_ratio_db"] = float(
                    np.mean(gv_ratio_db(pred, nat, masks))
                )
                results[f"{variant}/{name}_ms_distance_db"] = modulation_spectrum_distance_db(
                    pred, nat
                )
                if name == "mgc":
                    span = self.layout.span("mgc")
                    results[f"{variant}/mcd_db"] = float(
                        np.mean(
                            [
                                mel_cepstral_distortion_db(p[:, span], n[:, span], m)
                                for p, n, m in zip(
                                    self._outputs[variant], natural, masks or [None] * len(natural)
                                )
                            ]
                        )
                    )
        results["loss"] = float(
            np.mean([results[f"gan/{s}_ms_distance_db"] for s in self.train_streams])
        )
        return results

    def _log_metrics(self, stage: str) -> None:
        if self.trainer.world_size > 1:
            # Under DDP each process holds its share of the utterances; the measures (global
            # variances, modulation spectra) need them all, and every process logs them.
            parts = all_gather_objects(self._outputs)
            self._outputs = {k: [u for part in parts for u in part[k]] for k in self._outputs}
        self.log_metrics(stage, self.metrics())

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self._outputs["natural"]:
            return
        self._log_metrics("val")
        self.log_examples("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")
        self.log_examples("test")

    def log_examples(self, stage: str) -> None:
        """WORLD audio and a GV/spectrogram figure of the first utterance (with WORLD
        features only)."""
        if self.world is None or not self.has_media_logger():
            return
        frames = round(self.example_seconds * self.world.frame_rate_hz)
        named = {"natural": self._outputs["natural"][0][:frames]}
        named |= {v: self._outputs[v][0][:frames] for v in VARIANTS}
        for name, features in named.items():
            audio = world_synthesis(self.layout.split(features), self.world)
            self.log_audio(f"{stage}/{name}", torch.from_numpy(audio))
        if "mgc" in self.layout.names:
            span = self.layout.span("mgc")
            voiced = (
                self.layout.voiced(named["natural"])
                if "vuv" in self.layout.names
                else slice(None)
            )
            offset = self.postfilter.offsets.get("mgc", 2)
            figure = plot_postfilter(
                named["natural"][voiced][:, span],
                {v: named[v][voiced][:, span] for v in VARIANTS},
                {n: mgc_to_log_spectrum_db(f[:, span], self.world) for n, f in named.items()},
                self.world.frame_rate_hz,
                self.world.sample_rate,
                offset=offset,
            )
            self.log_figure(f"{stage}/postfilter", figure)

    # -- export ------------------------------------------------------------------------------

    def on_fit_end(self) -> None:
        if self.trainer.logger is None:  # no run folder (trainer.log_dir would be the cwd)
            return
        run_dir = self.run_dir()
        if run_dir is not None and self.global_rank == 0:
            postfilter, what = self.best_copy("postfilter")
            self.export(run_dir, postfilter, what)

    def export(
        self,
        folder: str | Path,
        postfilter: MultiStreamPostFilter | None = None,
        what: str = "the final model",
    ) -> Path:
        """Write ``postfilter.pt`` (``postfilter``, default this task's), ``scaler.npz``,
        ``gv.npz`` and ``streams.json`` to ``folder``; returns the ``postfilter.pt`` path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = (postfilter if postfilter is not None else self.postfilter).state()
        state["world"] = self.world.to_dict() if self.world is not None else None
        path = folder / "postfilter.pt"
        torch.save(state, path)
        self.scaler().save(folder / "scaler.npz")
        self.gv_postfilter().cpu().save(folder / "gv.npz")
        if self.world is not None:
            self.world.save(folder / "streams.json", self.layout)
        else:
            (folder / "streams.json").write_text(
                json.dumps({"streams": self.layout.to_dict()}) + "\n"
            )
        print(f"exported {what} to {path}")
        return path


def enhance_features(
    features: np.ndarray,
    postfilter: MultiStreamPostFilter | None = None,
    gv: GVPostFilter | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Raw features ``(frames, dims)`` through the GAN post-filter (noise from ``seed``) and
    then the GV post-filter, each when given."""
    x = torch.from_numpy(np.asarray(features, dtype=np.float32))[None]
    with torch.no_grad():
        if postfilter is not None:
            x = postfilter.eval()(x, torch.Generator().manual_seed(seed))
        if gv is not None:
            x = gv(x)
    return x[0].numpy()
