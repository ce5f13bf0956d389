"""Audio-effect style transfer (Steinmetz et al., "Style Transfer of Audio Effects with
Differentiable Signal Processing", JAES 2022; DeepAFx-ST).

One encoder embeds the input and the reference; a controller MLP maps the two embeddings to
normalized parameters of an effect chain (default: 6-band parametric EQ + compressor), and
the chain processes the input. The output should sound like the input processed the way the
reference was (``target``, from :class:`diffx.data.StyleTransferDataModule`).

Gradients reach the controller by one of three methods (``gradient``):

* ``"autodiff"``: back-propagation through diffx's own differentiable effects;
* ``"spsa"``: simultaneous perturbation stochastic approximation around the whole chain as a
  black box (:class:`diffx.effects.SPSAChain`), so any effect works: pedalboard's, a VST3
  plug-in loaded by :class:`diffx.effects.PedalboardEffect`. The perturbation ``spsa_epsilon``
  halves after ``spsa_patience`` validations without improvement (DeepAFx-ST);
* ``"proxy"``: frozen neural proxies (:class:`diffx.effects.NeuralProxy`, trained by
  :class:`diffx.tasks.ProxyTraining`) stand in for the effects (:class:`diffx.effects.ProxyChain`).

With ``loudness_match``, a last stage (after the chain) brings the output to the reference's
integrated loudness (BS.1770, :func:`diffx.losses.loudness.integrated_loudness`) plus a
correction in dB the controller predicts. The rule-based baseline matches loudness the same way
but without the correction; DeepAFx-ST has no such stage (its compressor's make-up gain must
carry the level), so it is off by default.

Losses, by name, each with a weight in ``losses``: ``l1`` (mean absolute error), ``mrstft``
(auraloss multi-resolution STFT), ``mel_stft``, ``esr``, ``loudness`` (BS.1770 loudness
difference, LU). DeepAFx-ST trains on ``mrstft`` + 100 x ``l1``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from diffx._validation import check_integer, check_sample_rate, wide_dtype
from diffx.analysis.style_transfer import parameter_error, rule_based_match, style_metrics
from diffx.data.sources import check_effect_rate
from diffx.data.style_transfer import default_chain
from diffx.effects.base import EffectChain
from diffx.effects.proxy import PROXY_MODES, ProxyChain
from diffx.effects.spsa import SPSAChain
from diffx.functional.stereo import mid_side_encode
from diffx.losses import (
    ESRLoss,
    LoudnessLoss,
    MelSTFTLoss,
    MultiResolutionSTFTLoss,
    SumAndDifferenceSTFTLoss,
)
from diffx.losses.loudness import integrated_loudness
from diffx.nn import Controller, SpectralEncoder
from diffx.tasks.base import AudioTask, adam_with_cosine_decay, check_loss_weights

GRADIENTS = ("autodiff", "spsa", "proxy")
LOSSES = ("l1", "mrstft", "mel_stft", "esr", "loudness", "sum_diff")
DEFAULT_LOSSES = {"mrstft": 1.0, "l1": 100.0}
"""DeepAFx-ST's training loss: MR-STFT + 100 x L1 (shared ANCHORS.md)."""

#: Largest gain (dB, either sign) of the reference-loudness stage before its correction.
MAX_MATCH_GAIN_DB = 40.0

METRICS = ("mrstft", "lufs_error_lu", "centroid_error_hz", "crest_error_db")


def _l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs().mean()


def _like_target(audio: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A mono baseline against a stereo target is heard as the same signal on both sides."""
    return audio.expand_as(target) if audio.shape[1] == 1 < target.shape[1] else audio


class StyleTransfer(AudioTask):
    """Predict effect parameters from a reference and apply them to an input.

    Args:
        chain: the effects the model controls (``EffectChain``; default
            :func:`default_chain`). Its sample rate must equal ``sample_rate``.
        encoder: embeds ``(batch, 1, samples)`` audio to ``(batch, embed_dim)``; must have an
            ``embed_dim`` attribute (default :class:`diffx.nn.SpectralEncoder`).
        gradient: ``"autodiff"``, ``"spsa"`` or ``"proxy"`` (module docs).
        sample_rate: Hz; linked from the data module by the CLI.
        controller_hidden, controller_layers: the controller MLP (DeepAFx-ST: 256, 3).
        learning_rate: Adam step size (DeepAFx-ST: 1e-4; 1e-5 with SPSA).
        final_learning_rate: when given, the step size falls from ``learning_rate`` to this
            value along a cosine over ``trainer.max_steps`` steps, so a short run can start
            with big steps and still settle; ``None`` keeps the rate constant (DeepAFx-ST).
        losses: ``{name: weight}`` from :data:`LOSSES` (default :data:`DEFAULT_LOSSES`);
            ``sum_diff`` is the stereo :class:`diffx.losses.SumAndDifferenceSTFTLoss`, for chains
            with a stereo output.
        spsa_epsilon: SPSA perturbation size in normalized units (DeepAFx-ST: 0.0005).
        spsa_perturbations: SPSA estimates averaged per item and step.
        spsa_workers: threads running the black box per item (pedalboard frees the GIL).
        spsa_patience: validations without a better ``val/loss`` before epsilon halves.
        proxies: with ``gradient: proxy``, one entry per effect of ``chain``: a proxy file from
            :class:`ProxyTraining`, or ``null`` to keep that (differentiable) effect.
        proxy_mode: ``"proxy"`` or ``"straight_through"`` (see :mod:`diffx.effects.proxy`).
        loudness_match: end with the reference-loudness stage (module docs).
        loudness_correction_db: the largest correction (either sign, dB) the controller adds
            to the matched loudness; its one extra sigmoid output maps to
            ``[-loudness_correction_db, +loudness_correction_db]``.
        data_chain: the chain that made the examples' styles (the data module's ``chain``;
            the diffx CLI links it, see :func:`diffx.tasks.links.link_data_to_model`). With
            it, evaluation also reports ``param_error`` (:meth:`true_parameters`); without
            it, that metric is left out. In Python: ``StyleTransfer(...,
            data_chain=data.chain)`` for a :class:`diffx.data.StyleTransferDataModule`
            ``data``.
        stereo: encode the mid and the side of each signal (:func:`mid_side_encode`; mono
            audio has no side) and give the controller both embeddings of input and
            reference, so it can hear width and panning; ``False``: the encoder hears the mean
            of the channels only. For chains that end in stereo (a vocal chain with a stereo
            reverb and a width control).
        compile: ``torch.compile`` the encoder (``encoder.compile()``; for
            :class:`SpectralEncoder` the network behind its STFT) and the ``mrstft`` and
            ``mel_stft`` losses' terms after their STFTs (their ``compile``). Fused kernels round
            differently, so outputs, losses and gradients change by float rounding; the first
            steps (and each new batch shape or train/eval switch) spend seconds compiling. Needs a
            C++ compiler on the CPU. ``False``: eager, as DeepAFx-ST.
        fast_loss_backward: the ``mrstft`` and ``mel_stft`` losses differentiate the STFT of
            the output by an inverse real FFT (their ``fast_backward``): the same loss values,
            gradients equal to float rounding (about 1e-7 relative), first order only.
            ``False``: auraloss's gradients, bit for bit.
    """

    def __init__(
        self,
        chain: EffectChain | None = None,
        encoder: nn.Module | None = None,
        gradient: str = "autodiff",
        sample_rate: int = 24000,
        controller_hidden: int = 256,
        controller_layers: int = 3,
        learning_rate: float = 1e-4,
        final_learning_rate: float | None = None,
        losses: dict[str, float] | None = None,
        spsa_epsilon: float = 5e-4,
        spsa_perturbations: int = 1,
        spsa_workers: int = 0,
        spsa_patience: int = 10,
        proxies: list[str | None] | None = None,
        proxy_mode: str = "proxy",
        loudness_match: bool = False,
        loudness_correction_db: float = 3.0,
        data_chain: EffectChain | None = None,
        stereo: bool = False,
        compile: bool = False,
        fast_loss_backward: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["chain", "encoder", "data_chain"])
        self.sample_rate = int(check_sample_rate(sample_rate))
        chain = chain if chain is not None else default_chain(self.sample_rate)
        if not isinstance(chain, EffectChain):
            raise ValueError(f"chain must be an EffectChain, got {type(chain).__name__}")
        check_effect_rate(chain, self.sample_rate, "chain")
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
        self.gradient = gradient
        self.chain = chain
        self.processor = self._make_processor(
            chain, gradient, spsa_epsilon, spsa_perturbations, spsa_workers, proxies, proxy_mode
        )
        self.encoder = encoder if encoder is not None else SpectralEncoder(self.sample_rate)
        flags = (("compile", compile), ("fast_loss_backward", fast_loss_backward),
                 ("stereo", stereo))  # fmt: skip
        for name, flag in flags:
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be true or false, got {flag!r}")
        if compile:
            self.encoder.compile()
        embed_dim = getattr(self.encoder, "embed_dim", None)
        if not isinstance(embed_dim, int):
            raise ValueError(
                f"encoder {type(self.encoder).__name__} must have an integer embed_dim attribute"
            )
        if not isinstance(loudness_match, bool):
            raise ValueError(f"loudness_match must be true or false, got {loudness_match!r}")
        self.loudness_match = loudness_match
        if not (0 <= loudness_correction_db <= MAX_MATCH_GAIN_DB):
            raise ValueError(
                f"loudness_correction_db must lie in [0, {MAX_MATCH_GAIN_DB}], "
                f"got {loudness_correction_db!r}"
            )
        self.loudness_correction_db = float(loudness_correction_db)
        self.stereo = stereo
        self.controller = Controller(
            embed_dim * (2 if stereo else 1),  # mid and side embeddings when stereo
            chain.parameter_size() + int(loudness_match),  # + the loudness correction
            hidden=controller_hidden,
            n_layers=controller_layers,
        )
        if not (learning_rate > 0):
            raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
        self.learning_rate = float(learning_rate)
        if final_learning_rate is not None and not (0 <= final_learning_rate <= learning_rate):
            raise ValueError(
                f"final_learning_rate must lie in [0, learning_rate={learning_rate}], "
                f"got {final_learning_rate!r}"
            )
        self.final_learning_rate = final_learning_rate
        self.losses = check_loss_weights(DEFAULT_LOSSES if losses is None else losses, LOSSES)
        self.loss_modules = nn.ModuleDict()
        if "mrstft" in self.losses:
            self.loss_modules["mrstft"] = MultiResolutionSTFTLoss(
                fast_backward=fast_loss_backward, compile=compile
            )
        if "mel_stft" in self.losses:
            self.loss_modules["mel_stft"] = MelSTFTLoss(
                sample_rate=self.sample_rate, fast_backward=fast_loss_backward, compile=compile
            )
        if "esr" in self.losses:
            self.loss_modules["esr"] = ESRLoss()
        if "loudness" in self.losses:
            self.loss_modules["loudness"] = LoudnessLoss(self.sample_rate)
        if "sum_diff" in self.losses:
            self.loss_modules["sum_diff"] = SumAndDifferenceSTFTLoss(
                fast_backward=fast_loss_backward, compile=compile
            )
        self.spsa_patience = check_integer(spsa_patience, "spsa_patience", 1)
        self._spsa_best, self._spsa_stale = math.inf, 0
        if data_chain is not None and not isinstance(data_chain, EffectChain):
            raise ValueError(f"data_chain must be an EffectChain, got {type(data_chain).__name__}")
        # Set past nn.Module's registration: the data's chain is no part of the model (not in
        # its checkpoints, which stay loadable without it; not moved to its device).
        self.__dict__["data_chain"] = data_chain

    @staticmethod
    def _make_processor(chain, gradient, epsilon, perturbations, workers, proxies, mode):
        if gradient == "autodiff":
            blocked = [n for n, e in zip(chain.names, chain.effects)
                       if not getattr(e, "differentiable", True)]  # fmt: skip
            if blocked:
                raise ValueError(
                    f"effects {blocked} have no gradient; train with gradient: spsa or proxy"
                )
            if proxies is not None:
                raise ValueError("proxies are used only with gradient: proxy")
            return chain
        if gradient == "spsa":
            if proxies is not None:
                raise ValueError("proxies are used only with gradient: proxy")
            return SPSAChain(
                chain, epsilon=epsilon, n_perturbations=perturbations, num_workers=workers
            )
        if proxies is None:
            raise ValueError(
                "gradient: proxy needs proxies: one proxy file (or null) per effect of the chain"
            )
        if mode not in PROXY_MODES:
            raise ValueError(f"proxy_mode must be one of {PROXY_MODES}, got {mode!r}")
        return ProxyChain(chain, list(proxies), mode=mode)

    # ------------------------------------------------------------------ model
    def predict_parameters(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Normalized chain parameters ``(batch, n_params)`` for input and reference audio.

        Both are ``(batch, channels, samples)``; channels are averaged for the encoder (mid and
        side are encoded apart with ``stereo``), and the two may differ in length.
        """
        return self.predict(x, reference)[0]

    def predict(
        self, x: torch.Tensor, reference: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(chain parameters (batch, n_params), loudness correction in dB (batch,))``; the
        correction is ``None`` without ``loudness_match``. Shapes as
        :meth:`predict_parameters`."""
        x, reference = self._encoder_input(x), self._encoder_input(reference)
        if x.shape == reference.shape:
            # One call, so an encoder with batch statistics (BatchNorm in training) normalizes
            # input and reference alike; two calls would each be shifted to their own batch
            # mean, hiding the level difference between them that the controller must read.
            e_x, e_r = self._embed(torch.cat([x, reference])).chunk(2)
        else:
            e_x, e_r = self._embed(x), self._embed(reference)
        out = self.controller(e_x, e_r)
        if not self.loudness_match:
            return out, None
        correction_db = (2 * out[:, -1] - 1) * self.loudness_correction_db
        return out[:, :-1], correction_db

    def _encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, 1, samples)`` mean of the channels, or ``(batch, 2, samples)`` [mid, side]
        with ``stereo`` (mono audio: its side is zero)."""
        if not self.stereo:
            return x.mean(dim=1, keepdim=True)
        if x.shape[1] == 1:
            return torch.cat([x, torch.zeros_like(x)], dim=1)
        if x.shape[1] != 2:
            raise ValueError(
                f"a stereo StyleTransfer takes mono or stereo audio, got {x.shape[1]} channels"
            )
        return mid_side_encode(x)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(batch, embed_dim)``, or mid and side ones side by side with
        ``stereo``, for the output of :meth:`_encoder_input`."""
        if not self.stereo:
            return self.encoder(x)
        # Mid and side through the encoder in one call (batch statistics shared, see predict).
        mid_side = self.encoder(torch.cat([x[:, :1], x[:, 1:]]))
        return torch.cat(mid_side.chunk(2), dim=1)

    def forward(
        self, x: torch.Tensor, reference: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Process ``x`` in the style of ``reference``: returns ``(output, params)``."""
        params, correction_db = self.predict(x, reference)
        y = self.processor(x, params)
        if correction_db is not None:
            y = self.match_loudness(y, reference, correction_db)
        return y, params

    def match_loudness(
        self, y: torch.Tensor, reference: torch.Tensor, correction_db: torch.Tensor
    ) -> torch.Tensor:
        """Scale ``y`` to the loudness of ``reference`` plus ``correction_db``.

        Args:
            y: ``(batch, channels, samples)`` processed audio, at least 400 ms.
            reference: ``(batch, channels', samples')`` style reference, at least 400 ms.
            correction_db: ``(batch,)`` dB added to the reference's loudness.

        Returns:
            ``y`` times the gain, shaped like ``y``. The gain before the correction is
            clipped to +-:data:`MAX_MATCH_GAIN_DB`, so near-silent audio on either side gives a
            bounded gain instead of one that amplifies numerical noise (or mutes the output)
            by a hundred dB. Gradients flow through the output's own loudness, so the chain's
            overall level has no effect on the result.
        """
        for name, audio in (("output", y), ("reference", reference)):
            if audio.shape[-1] < self.sample_rate * 0.4:
                raise ValueError(
                    f"loudness_match needs at least 400 ms of {name} audio (one BS.1770 block), "
                    f"got {audio.shape[-1]} samples at {self.sample_rate} Hz"
                )
        gain_db = integrated_loudness(reference, self.sample_rate) - integrated_loudness(
            y, self.sample_rate
        )
        gain_db = gain_db.clamp(-MAX_MATCH_GAIN_DB, MAX_MATCH_GAIN_DB) + correction_db
        return y * torch.pow(10.0, gain_db / 20).to(y.dtype).view(-1, 1, 1)

    def physical_parameters(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"effect.param": (batch,) physical value}`` for normalized ``params``."""
        return self.chain.denormalize(params)

    # ------------------------------------------------------------------ losses
    def loss_terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {}
        for name in self.losses:
            terms[name] = (
                _l1(pred, target) if name == "l1" else self.loss_modules[name](pred, target)
            )
        return terms

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = self.loss_terms(pred, target)
        return sum(self.losses[name] * value for name, value in terms.items())

    def configure_optimizers(self):
        trainable = [p for p in self.parameters() if p.requires_grad]
        return adam_with_cosine_decay(self, trainable, self.learning_rate, self.final_learning_rate)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        pred, _ = self(batch["input"], batch["reference"])
        terms = self.loss_terms(pred, batch["target"])
        loss = sum(self.losses[name] * value for name, value in terms.items())
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {float(loss)} at step {self.global_step} "
                f"(terms: { {k: float(v) for k, v in terms.items()} })"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=pred.shape[0])
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=pred.shape[0])
        if self.gradient == "spsa":
            self.log("train/spsa_epsilon", self.processor.epsilon, batch_size=pred.shape[0])
        return loss

    # ------------------------------------------------------------------ evaluation
    def true_parameters(
        self, batch: dict[str, torch.Tensor], data_chain: EffectChain | None
    ) -> torch.Tensor | None:
        """The reference's parameters in this model's normalization, when comparable.

        ``data_chain`` (the chain that made ``batch["params"]``) may have other ranges than the
        model's: its physical values are normalized with the model's specs (clipped to [0, 1]).
        ``None`` when there is no data chain or its parameter names differ from the model's.
        """
        if data_chain is None or data_chain.param_names != self.chain.param_names:
            return None
        wide = wide_dtype(batch["params"].device, "style transfer's true parameters")
        physical = data_chain.denormalize(batch["params"].to(wide).clamp(0, 1))
        columns = [spec.normalize(physical[name]) for name, spec
                   in zip(self.chain.param_names, self.chain.param_specs)]  # fmt: skip
        return torch.stack(columns, dim=1).clamp(0, 1)

    def evaluate(
        self, batch: dict[str, torch.Tensor], data_chain: EffectChain | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-item metrics ``{name: (batch,)}`` of the model (``loss``, :data:`METRICS`,
        ``param_error`` where ``data_chain`` makes the truth known, see
        :meth:`true_parameters`), of no processing (``input_*``) and of the rule-based match
        (``rule_*``, :func:`diffx.analysis.style_transfer.rule_based_match`)."""
        pred, params = self(batch["input"], batch["reference"])
        target = batch["target"]
        metrics = {"loss": self.loss(pred, target).expand(pred.shape[0])}
        for name, value in style_metrics(pred, target, self.sample_rate).items():
            metrics[name] = value
        # The two baselines on the same examples: no processing, and the rule-based match.
        unprocessed = _like_target(batch["input"], target)
        for name, value in style_metrics(unprocessed, target, self.sample_rate).items():
            metrics[f"input_{name}"] = value
        rule_output, _ = rule_based_match(batch["input"], batch["reference"], self.sample_rate)
        rule_output = _like_target(rule_output, target)
        for name, value in style_metrics(rule_output, target, self.sample_rate).items():
            metrics[f"rule_{name}"] = value
        truth = self.true_parameters(batch, data_chain)
        if truth is not None:
            metrics["param_error"] = parameter_error(params.to(truth.dtype), truth)
        self.keep_example(
            input=batch["input"][0, 0],
            reference=batch["reference"][0, 0],
            target=target[0, 0],
            output=pred[0, 0],
        )
        return metrics

    def _accumulate(self, batch: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            metrics = self.evaluate(batch, self.data_chain)
        self.accumulate({**metrics, "items": batch["input"].shape[0]})

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._accumulate(batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._accumulate(batch)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self(batch["input"], batch["reference"])[0]

    def on_test_epoch_end(self) -> None:
        self.log_means("test")

    def on_validation_epoch_end(self) -> None:
        means = self.log_means("val")
        if self.trainer.sanity_checking or not means:
            return
        if self.gradient == "spsa":
            self._spsa_schedule(means["loss"])
        example = self.evaluation_example
        if example is not None:
            from diffx.analysis.plots import plot_spectra

            self.log_example_audio()
            self.log_figure(
                "spectra/validation",
                plot_spectra(
                    {k: example[k] for k in ("input", "target", "output")},
                    self.sample_rate,
                    n_fft=min(4096, example["input"].shape[-1]),
                ),
            )

    def _spsa_schedule(self, val_loss: float) -> None:
        """Halve the SPSA epsilon after ``spsa_patience`` validations without improvement."""
        if val_loss < self._spsa_best:
            self._spsa_best, self._spsa_stale = val_loss, 0
            return
        self._spsa_stale += 1
        if self._spsa_stale >= self.spsa_patience:
            self.processor.epsilon = self.processor.epsilon / 2
            self._spsa_stale = 0

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.gradient == "spsa":
            checkpoint["spsa"] = {
                "epsilon": self.processor.epsilon,
                "best": self._spsa_best,
                "stale": self._spsa_stale,
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("spsa")
        if state is not None and self.gradient == "spsa":
            self.processor.epsilon = state["epsilon"]
            self._spsa_best, self._spsa_stale = state["best"], state["stale"]
