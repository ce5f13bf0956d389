"""Effects as nn.Modules: normalized [0, 1] parameters in, audio out."""

from diffx.effects.base import Effect, EffectChain, ParamSpec, check_normalized
from diffx.effects.blackbox import PedalboardCompressor, PedalboardEffect, PedalboardParametricEQ
from diffx.effects.circuits import DiodeClipper
from diffx.effects.delays import FDNReverb, FeedbackDelay
from diffx.effects.dynamics import Expander, Limiter, NoiseGate
from diffx.effects.modulation import AutoWah, ModulatedFilter
from diffx.effects.processors import (
    AllpassCascade,
    Compressor,
    Delay,
    Distortion,
    Gain,
    NoiseReverb,
    ParametricEQ,
)
from diffx.effects.proxy import NeuralProxy, ProxyChain, load_proxy, save_proxy
from diffx.effects.spsa import SPSAChain
from diffx.effects.stereo import Pan, StereoWidth

__all__ = [
    "FDNReverb",
    "FeedbackDelay",
    "AutoWah",
    "ModulatedFilter",
    "NeuralProxy",
    "ProxyChain",
    "load_proxy",
    "save_proxy",
    "DiodeClipper",
    "AllpassCascade",
    "Compressor",
    "Expander",
    "Limiter",
    "NoiseGate",
    "Delay",
    "Distortion",
    "Effect",
    "EffectChain",
    "Gain",
    "NoiseReverb",
    "ParamSpec",
    "ParametricEQ",
    "PedalboardCompressor",
    "PedalboardEffect",
    "PedalboardParametricEQ",
    "Pan",
    "SPSAChain",
    "StereoWidth",
    "check_normalized",
]
