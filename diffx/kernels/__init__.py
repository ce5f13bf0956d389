"""Recursive loops (IIR sections, compressor ballistics, time-varying one-pole) as autograd
Functions with compiled back ends and a plain PyTorch reference."""

from diffx.kernels.ballistics import attack_release
from diffx.kernels.delay_network import delay_network
from diffx.kernels.iir import sos_cascade
from diffx.kernels.onepole import onepole
from diffx.kernels.varying import sos_cascade_varying, svf

__all__ = [
    "attack_release",
    "delay_network",
    "onepole",
    "sos_cascade",
    "sos_cascade_varying",
    "svf",
]
