"""Recursive loops (IIR sections, compressor ballistics, time-varying one-pole) as autograd
Functions with compiled back ends and a plain PyTorch reference."""

from diffx.kernels.ballistics import attack_release
from diffx.kernels.iir import sos_cascade
from diffx.kernels.onepole import onepole

__all__ = ["attack_release", "onepole", "sos_cascade"]
