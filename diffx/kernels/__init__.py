"""Recursive loops (IIR sections, compressor ballistics, time-varying one-pole) as autograd
Functions with compiled back ends and a plain PyTorch reference."""
