"""Effects as nn.Modules: normalized [0, 1] parameters in, audio out."""

from diffx.effects.base import Effect, EffectChain, ParamSpec, check_normalized
from diffx.effects.circuits import DiodeClipper
from diffx.effects.processors import (
    AllpassCascade,
    Compressor,
    Delay,
    Distortion,
    Gain,
    NoiseReverb,
    ParametricEQ,
)

__all__ = [
    "DiodeClipper",
    "AllpassCascade",
    "Compressor",
    "Delay",
    "Distortion",
    "Effect",
    "EffectChain",
    "Gain",
    "NoiseReverb",
    "ParamSpec",
    "ParametricEQ",
    "check_normalized",
]
