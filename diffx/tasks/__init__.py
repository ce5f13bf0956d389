"""LightningModules, one per task, each trained from YAML through the ``diffx`` CLI."""

from diffx.tasks.antialias import AntiAliasFineTuning
from diffx.tasks.base import AudioTask
from diffx.tasks.checkpoint import ModelCheckpoint, ResumeState
from diffx.tasks.effect_modeling import EffectModeling
from diffx.tasks.phase_alignment import PhaseAlignment
from diffx.tasks.postfilter import GANPostFilter
from diffx.tasks.proxy_training import ProxyTraining
from diffx.tasks.style_transfer import StyleTransfer
from diffx.tasks.timbre_transfer import TimbreTransfer

__all__ = [
    "GANPostFilter",
    "AntiAliasFineTuning",
    "AudioTask",
    "EffectModeling",
    "ModelCheckpoint",
    "PhaseAlignment",
    "ProxyTraining",
    "ResumeState",
    "StyleTransfer",
    "TimbreTransfer",
]
