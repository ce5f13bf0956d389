"""A single-layer GRU whose backward computes the weight gradients in one matrix product.

PyTorch's CPU GRU differentiates its time loop op by op: every one of the ``T`` steps adds an
outer product ``(3H x B) @ (B x H)`` into the recurrent weight gradient and another into the
input weight gradient. Those ``2 T`` thin products (batch-sized inner dimension, full-size
output) are memory-bound and dominated a DDSP training step (1000 frames: 58 % of its time in
``aten::mm``, ``benchmarks/RESULTS.md``). Here the time loop is written out with the same
equations and parameters as :class:`torch.nn.GRU`,

    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1},

and its adjoint is run by hand: the loop backwards in time only propagates ``dL/dh`` (one
``(B x 3H) @ (3H x H)`` product per step) and stores each step's gate gradients; the weight and
input gradients are then single products over all ``T B`` rows. The input projections of the
forward are likewise one product. Results equal ``torch.nn.GRU``'s to float32 rounding (the
sums are taken in a different order); second derivatives are taken through the same equations
in plain autograd ops.
"""

from __future__ import annotations

import torch
from torch import nn


def _gru_steps(x, h0, w_ih, w_hh, b_ih, b_hh, keep: bool):
    """Run the recurrence; ``x (B, T, I)``, ``h0 (B, H)``. Returns ``h (T + 1, B, H)`` (h0
    first) and, when ``keep``, the gates ``rz (T, B, 2H)``, ``n (T, B, H)`` and the recurrent
    candidate term ``W_hn h + b_hn (T, B, H)`` the backward needs."""
    B, T, _ = x.shape  # batch, steps, inputs
    H = w_hh.shape[1]  # hidden units
    gi = torch.addmm(b_ih, x.reshape(B * T, -1), w_ih.t()).view(B, T, 3 * H)
    hs = x.new_empty(T + 1, B, H)
    hs[0] = h0
    rz_all = x.new_empty(T, B, 2 * H) if keep else None
    n_all = x.new_empty(T, B, H) if keep else None
    hn_all = x.new_empty(T, B, H) if keep else None
    w_hh_t = w_hh.t()
    h = h0
    for t in range(T):
        gh = torch.addmm(b_hh, h, w_hh_t)
        rz = torch.sigmoid(gi[:, t, : 2 * H] + gh[:, : 2 * H])
        hn = gh[:, 2 * H :]
        n = torch.tanh(torch.addcmul(gi[:, t, 2 * H :], rz[:, :H], hn))
        h = torch.lerp(n, h, rz[:, H:])  # n + z (h - n) = (1 - z) n + z h
        hs[t + 1] = h
        if keep:
            rz_all[t] = rz
            n_all[t] = n
            hn_all[t] = hn
    return hs, rz_all, n_all, hn_all


class _GRUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh):
        with torch.no_grad():
            hs, rz, n, hn = _gru_steps(x, h0, w_ih, w_hh, b_ih, b_hh, keep=True)
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, hs, rz, n, hn)
        return hs[1:].transpose(0, 1)

    @staticmethod
    def backward(ctx, grad_out):
        x, h0, w_ih, w_hh, b_ih, b_hh, hs, rz_all, n_all, hn_all = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the plain loop instead
            # The saved inputs carry their own graph here, so the recomputed gradients are
            # differentiable with respect to the original inputs.
            inputs = (x, h0, w_ih, w_hh, b_ih, b_hh)
            wanted = [i for i, need in enumerate(ctx.needs_input_grad) if need]
            out = _gru_steps(*inputs, keep=False)[0][1:].transpose(0, 1)
            grads = torch.autograd.grad(
                out, [inputs[i] for i in wanted], grad_out, create_graph=True
            )
            result = [None] * len(inputs)
            for i, grad in zip(wanted, grads):
                result[i] = grad
            return tuple(result)
        T, B, H = n_all.shape
        grad_out = grad_out.transpose(0, 1)  # (T, B, H)
        d_gi = x.new_empty(T, B, 3 * H)  # dL/d(input projections)
        d_gh = x.new_empty(T, B, 3 * H)  # dL/d(recurrent projections)
        dh = torch.zeros_like(h0)
        for t in range(T - 1, -1, -1):
            dh = dh + grad_out[t]
            rz = rz_all[t]
            r, z = rz[:, :H], rz[:, H:]
            n = n_all[t]
            d_n = dh * (1.0 - z)  # through h = (1 - z) n + z h_prev
            d_z = dh * (hs[t] - n)
            d_an = d_n * (1.0 - n * n)  # through tanh
            d_arz = torch.cat([d_an * hn_all[t], d_z], dim=1) * rz * (1.0 - rz)  # sigmoid
            d_gi[t, :, : 2 * H] = d_arz
            d_gi[t, :, 2 * H :] = d_an
            d_gh[t, :, : 2 * H] = d_arz
            d_gh[t, :, 2 * H :] = d_an * r
            dh = torch.addmm(dh * z, d_gh[t], w_hh)
        need = ctx.needs_input_grad
        d_gi_rows = d_gi.transpose(0, 1).reshape(B * T, 3 * H)  # rows in x's (B, T) order
        d_gh_rows = d_gh.view(T * B, 3 * H)
        grad_x = (d_gi_rows @ w_ih).view(x.shape) if need[0] else None
        grad_w_ih = d_gi_rows.t() @ x.reshape(B * T, -1) if need[2] else None
        grad_w_hh = d_gh_rows.t() @ hs[:-1].reshape(T * B, H) if need[3] else None
        grad_b_ih = d_gi_rows.sum(0) if need[4] else None
        grad_b_hh = d_gh_rows.sum(0) if need[5] else None
        return grad_x, (dh if need[1] else None), grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh


class GRU(nn.GRU):
    """:class:`torch.nn.GRU` (one layer, ``batch_first=True``, one direction) with the faster
    backward above on the CPU; same parameters and state-dict keys, so checkpoints of either
    load into the other. Other devices, packed sequences and the settings the fast path does not
    cover run ``torch.nn.GRU`` itself.

    Shapes: ``forward(x (batch, steps, input_size), h0 (1, batch, hidden_size) | None)`` returns
    ``(output (batch, steps, hidden_size), h_n (1, batch, hidden_size))``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__(input_size, hidden_size, num_layers=1, bias=bias, batch_first=True)

    def forward(self, x, hx=None):
        if (
            not isinstance(x, torch.Tensor)
            or x.device.type != "cpu"
            or x.dim() != 3
            or not self.bias
            or x.shape[1] == 0
            or torch.jit.is_scripting()
        ):
            return super().forward(x, hx)
        self._check_input_size(x)
        B = x.shape[0]
        if hx is not None and tuple(hx.shape) != (1, B, self.hidden_size):
            raise ValueError(
                f"GRU initial state must be (1, {B}, {self.hidden_size}), got {tuple(hx.shape)}"
            )
        h0 = x.new_zeros(B, self.hidden_size) if hx is None else hx[0]
        out = _GRUFunction.apply(
            x, h0, self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0
        )
        return out, out[:, -1:].transpose(0, 1)

    def _check_input_size(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"GRU input must have {self.input_size} features, got shape {tuple(x.shape)}"
            )
