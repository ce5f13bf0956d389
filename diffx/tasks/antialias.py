"""Anti-aliasing fine-tuning of a neural distortion model (Carson, Wright & Bilbao, DAFx 2025).

A trained model (the teacher) is frozen; a copy of it (the student) is fine-tuned to
reproduce the teacher's response to sine tones with every non-harmonic (aliased) component
removed. Per batch of random tones:

1. the teacher processes the tones; the steady-state part of its output (after ``N/5`` of the
   ``N`` samples) is split by harmonic analysis into harmonics and aliases, and the harmonic
   resynthesis is the student's target (:func:`diffx.analysis.bandlimit`);
2. student output and target both pass the low-pass pre-emphasis (pass 12 kHz, stop 16 kHz,
   80 dB; ``"lp"``), so energy the ear hardly hears above 16 kHz does not dominate;
3. the loss is ``esr_weight * ESR + nmr_weight * 10^(NMR_dB / 10) + dc_weight * DC``
   (lambda = ``nmr_weight`` = 1 in the paper's formulation; their code weights 0.5 / 0.5 and
   adds DC with weight 1, which ``dc_weight`` allows);
4. a recurrent student is warmed up for ``N/5`` samples without gradient, then trained by
   TBPTT over frames of ``N/10``; a WaveNet student is trained over frames of ``N/2`` after the
   first ``N/5``, each frame seeing its receptive field of input before it.

Validation: on the chromatic test set (every MIDI note 21-108 at ``val_levels_dbfs``) the
student's own aliasing (NMR-S, ESR-S) and its distance to the bandlimited teacher (ESR-T,
NMR-T, HESR-T) are logged in dB every validation, with the teacher's own NMR-S as the
baseline; on real guitar and bass audio the ESR and multi-resolution STFT distance of the
student to the teacher (and to the reference device, when the data module has one).

Training in float64 is ``trainer.precision: 64-true`` (the paper trains in double precision
for the NMR's dynamic range).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from diffx._validation import check_integer, check_sample_rate
from diffx.analysis import aliasing_metrics, bandlimit, chromatic_test_set
from diffx.analysis.plots import plot_aliasing_metrics, plot_spectra
from diffx.io.models import load_model
from diffx.losses import DCLoss, MultiResolutionSTFTLoss, NMRLoss, make_pre_emphasis
from diffx.losses.time_domain import esr
from diffx.nn import WaveNet
from diffx.tasks.base import (
    AudioTask,
    adam_with_cosine_decay,
    is_recurrent,
    tbptt_frames,
    to_db,
)

NMR_MIN_SAMPLES = 4096
"""Shortest loss frame: the NMR needs at least one 2048-sample STFT frame, two give an average."""


class AntiAliasFineTuning(AudioTask):
    """Teacher-student fine-tuning that removes aliasing from a neural distortion model.

    Args:
        teacher: path to the trained model (``.nam`` or GuitarML ``.json``; any file
            :func:`diffx.io.load_model` reads). The student starts as an exact copy.
        sample_rate: Hz; must match the teacher's (linked from the data module by the CLI).
        learning_rate: Adam step size (5e-4 in the paper, constant).
        final_learning_rate: when given, the step size falls from ``learning_rate`` to this
            value along a cosine over ``trainer.max_steps`` optimizer steps, so that a short
            run can start fast (cutting the aliasing) and end slowly (recovering the ESR to
            the teacher); ``None`` keeps the paper's constant rate.
        esr_weight, nmr_weight, dc_weight: loss weights (see the module docstring).
        pre_emphasis: filter on both signals before the loss (``"lp"`` in the paper).
        warmup_fraction: share of each tone used to settle the student (and discarded from
            the harmonic analysis): 1/5.
        frame_fraction: TBPTT / segment frame as a share of the tone length; ``None`` for the
            paper's 1/10 (recurrent) or 1/2 (WaveNet).
        val_levels_dbfs: levels of the chromatic validation tones (dB re full scale).
        val_midi_step: use every ``val_midi_step``-th MIDI note of 21-108 (1 = all 88).
        export_name: file stem for the exported student in the run folder (``None``: none);
            the best on validation when a ``ModelCheckpoint`` monitors a metric, else the final.
    """

    def __init__(
        self,
        teacher: str,
        sample_rate: int = 44100,
        learning_rate: float = 5e-4,
        final_learning_rate: float | None = None,
        esr_weight: float = 1.0,
        nmr_weight: float = 1.0,
        dc_weight: float = 0.0,
        pre_emphasis: str | None = "lp",
        warmup_fraction: float = 0.2,
        frame_fraction: float | None = None,
        val_levels_dbfs: Sequence[float] = (-20.0,),
        val_midi_step: int = 1,
        export_name: str | None = "student",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.sample_rate = check_sample_rate(sample_rate)
        self.teacher = load_model(teacher)
        teacher_rate = getattr(self.teacher, "sample_rate", None)
        if teacher_rate is not None and teacher_rate != self.sample_rate:
            raise ValueError(
                f"teacher {teacher!r} was trained at {teacher_rate} Hz but sample_rate is "
                f"{self.sample_rate} Hz; set data.sample_rate to the teacher's rate"
            )
        self.teacher.sample_rate = self.sample_rate
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.student = copy.deepcopy(self.teacher).requires_grad_(True)
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
        for name, value in (
            ("esr_weight", esr_weight),
            ("nmr_weight", nmr_weight),
            ("dc_weight", dc_weight),
        ):
            if value < 0:
                raise ValueError(f"{name} must be non-negative, got {value!r}")
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {warmup_fraction!r}")
        if frame_fraction is None:
            frame_fraction = 0.1 if is_recurrent(self.student) else 0.5
        if not 0.0 < frame_fraction <= 1.0:
            raise ValueError(f"frame_fraction must lie in (0, 1], got {frame_fraction!r}")
        if final_learning_rate is not None and not 0 < final_learning_rate <= learning_rate:
            raise ValueError(
                f"final_learning_rate must lie in (0, learning_rate = {learning_rate!r}], "
                f"got {final_learning_rate!r}"
            )
        self.learning_rate = float(learning_rate)
        self.final_learning_rate = final_learning_rate
        self.weights = {"esr": float(esr_weight), "nmr": float(nmr_weight), "dc": float(dc_weight)}
        self.warmup_fraction, self.frame_fraction = float(warmup_fraction), float(frame_fraction)
        self.pre_emphasis = make_pre_emphasis(pre_emphasis, self.sample_rate)
        self.nmr = NMRLoss(self.sample_rate, output="db")
        self.dc = DCLoss()
        self.spectral = MultiResolutionSTFTLoss()
        self.val_levels_dbfs = [float(v) for v in val_levels_dbfs]
        self.val_midi_step = check_integer(val_midi_step, "val_midi_step", 1)
        self.export_name = export_name
        self.automatic_optimization = False  # one optimizer step per frame
        self._val_tones = None
        self._teacher_report = None

    # -- training ---------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The student: ``(batch, 1, samples)`` -> same shape, from silence."""
        return self.student(x)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: never in training mode
        return self

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The fine-tuning loss of ``(batch, 1, samples)`` student output against the target."""
        pred_e, target_e = self.pre_emphasis(pred), self.pre_emphasis(target)
        terms = {
            "esr": esr(pred_e, target_e).mean(),
            # Carson et al. average the NMR in dB over the batch, then return to a power ratio.
            "nmr": 10.0 ** (self.nmr(pred_e, target_e) / 10.0),
            "dc": self.dc(pred, target),
        }
        terms["loss"] = sum(self.weights[k] * terms[k] for k in ("esr", "nmr", "dc"))
        return terms

    def _warmup_samples(self, total: int) -> int:
        warmup = int(round(total * self.warmup_fraction))
        # harmonic analysis needs an even number of samples
        return warmup + ((total - warmup) % 2)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, f0_hz = batch["input"], batch["f0_hz"]
        total = x.shape[-1]
        warmup = self._warmup_samples(total)
        frame = max(int(round(total * self.frame_fraction)), NMR_MIN_SAMPLES)
        with torch.no_grad():
            target, _ = bandlimit(self.teacher(x)[..., warmup:], f0_hz, self.sample_rate)
        optimizer = self.optimizers()
        history = []
        recurrent = is_recurrent(self.student)
        if recurrent:
            self.student.stateful = True
            self.student.reset_state()
        try:
            if recurrent and warmup > 0:
                with torch.no_grad():
                    self.student(x[..., :warmup])
            context = self.student.receptive_field - 1 if isinstance(self.student, WaveNet) else 0
            for start, stop in tbptt_frames(total, warmup, frame, NMR_MIN_SAMPLES):
                if recurrent:
                    pred = self.student(x[..., start:stop])
                else:
                    # the frame's output needs the receptive field of input before it
                    first = max(start - context, 0)
                    pred = self.student(x[..., first:stop])[..., start - first :]
                terms = self.loss(pred, target[..., start - warmup : stop - warmup])
                optimizer.zero_grad()
                self.manual_backward(terms["loss"])
                optimizer.step()
                if self.final_learning_rate is not None:
                    self.lr_schedulers().step()
                if recurrent:
                    self.student.detach_state()
                history.append({k: v.detach() for k, v in terms.items()})
        finally:
            if recurrent:
                self.student.stateful = False
                self.student.reset_state()
        for key in history[0]:
            value = torch.stack([h[key] for h in history]).mean()
            self.log(
                f"train/{key}",
                value,
                prog_bar=key == "loss",
                on_step=True,
                on_epoch=True,
                sync_dist=True,
            )
        return history[-1]["loss"]

    def configure_optimizers(self):
        # With manual optimization the schedule is stepped by hand once per optimizer step.
        return adam_with_cosine_decay(
            self, self.student.parameters(), self.learning_rate, self.final_learning_rate
        )

    # -- validation -------------------------------------------------------------------------

    def val_tones(self):
        """The chromatic validation tones (built once, in the model's dtype)."""
        if self._val_tones is None:
            tones = chromatic_test_set(self.sample_rate, levels_dbfs=self.val_levels_dbfs)
            self._val_tones = tones.subset(slice(0, len(tones), self.val_midi_step))
        return self._val_tones

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._audio_metrics(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._audio_metrics(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.student(batch["input"])

    def _audio_metrics(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        x = batch["input"]
        student, teacher = self.student(x), self.teacher(x)
        size = x.shape[0]
        ratio = esr(student, teacher).mean()
        self.log(f"{stage}/audio_esr_teacher", ratio, batch_size=size, sync_dist=True)
        self.log(f"{stage}/audio_esr_teacher_db", to_db(ratio), batch_size=size, sync_dist=True)
        self.log(
            f"{stage}/audio_mrstft_teacher",
            self.spectral(student, teacher),
            batch_size=size,
            sync_dist=True,
        )
        if "reference" in batch:
            reference = batch["reference"]
            for name, output in (("student", student), ("teacher", teacher)):
                ratio = esr(output, reference).mean()
                self.log(
                    f"{stage}/audio_esr_reference_{name}", ratio, batch_size=size, sync_dist=True
                )
                self.log(
                    f"{stage}/audio_mrstft_reference_{name}",
                    self.spectral(output, reference),
                    batch_size=size,
                    sync_dist=True,
                )
        example = {"input": x[0, 0], "teacher": teacher[0, 0], "student": student[0, 0]}
        if "reference" in batch:
            example["reference"] = batch["reference"][0, 0]
        self.keep_example(**example)

    def _tone_metrics(self, stage: str) -> None:
        tones = self.val_tones()
        if self._teacher_report is None:
            self._teacher_report = aliasing_metrics(
                self.teacher, self.sample_rate, tones, progress=False
            )
        report = aliasing_metrics(
            self.student, self.sample_rate, tones, teacher=self.teacher, progress=False
        )
        means = report.means_db()
        for key, value in means.items():
            # NMR-S, the aliasing measure, shows in the progress bar
            self.log(f"{stage}/{key}_db", value, prog_bar=key == "nmr_s", sync_dist=True)
        self.log(
            f"{stage}/teacher_nmr_s_db", self._teacher_report.means_db()["nmr_s"], sync_dist=True
        )
        # the fine-tuning objective on the chromatic set (linear ESR-T + lambda NMR-T)
        objective = (
            self.weights["esr"] * report.column("esr_t").mean()
            + self.weights["nmr"] * report.column("nmr_t").mean()
        )
        self.log(f"{stage}/loss", float(objective), prog_bar=True, sync_dist=True)
        self.log_figure("aliasing/student", plot_aliasing_metrics(report))
        if self.global_step == 0 or stage == "test":
            self.log_figure("aliasing/teacher", plot_aliasing_metrics(self._teacher_report))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self._tone_metrics("val")
        self._log_example()

    def on_test_epoch_end(self) -> None:
        self._tone_metrics("test")
        self._log_example()

    def _log_example(self) -> None:
        if self.evaluation_example is None:
            return
        self.log_example_audio()
        signals = {k: v for k, v in self.evaluation_example.items() if k != "input"}
        self.log_figure("spectra/validation", plot_spectra(signals, self.sample_rate))

    def on_fit_end(self) -> None:
        self.export_best("student", self.export_name)
