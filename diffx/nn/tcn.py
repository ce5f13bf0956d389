"""A temporal convolutional network (TCN) for audio, optionally conditioned on parameters by FiLM.

After the neural effect proxy of Steinmetz, Bryan & Reiss, "Style Transfer of Audio Effects
with Differentiable Signal Processing" (DeepAFx-ST, JAES 2022): a stack of residual blocks,
each a dilated 1-D convolution whose output is modulated by FiLM (Perez et al., "FiLM: Visual
Reasoning with a General Conditioning Layer", AAAI 2018) with a scale and shift computed from
the effect's parameters, then a PReLU. The paper's proxy has 4 blocks of 64 channels, kernel 13
and dilations 1, 8, 64, 512 (``dilation_growth`` 8).

Block ``i`` (dilation ``d_i = dilation_growth**i``) computes, from its input ``h``::

    z   = conv_{k, d_i}(h)                      # dilated, channels_in -> channels
    z   = (1 + gamma_i(cond)) * z + beta_i(cond)  # FiLM, per channel
    out = prelu(z) + res(h)                     # res: 1x1 convolution

and the network ends in a 1x1 convolution to ``out_channels``. ``gamma``/``beta`` of every block
come from one small MLP of the conditioning vector. The FiLM scale is written ``1 + gamma`` so
that a zero MLP output leaves the block unmodulated.

Padding keeps the output as long as the input: all on the left when causal (output ``t``
depends on inputs ``<= t`` only), split evenly when not (the block's ``(k - 1) d`` padding
samples go ``floor`` half to the left and the rest to the right).

Initialization (no normalization layers, so the untrained network must not grow or shrink the
signal): the dilated convolutions use He initialization for the PReLU slope, halved, and the
residual 1x1 convolutions a variance-preserving initialization, halved, so each block's output
has about the mean square of its input; biases start at zero. Unit-variance input then gives
output of roughly unit variance whatever the depth.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from diffx._validation import check_audio, check_finite, check_integer

#: Initial negative slope of the PReLU activations (PyTorch's default).
PRELU_INIT = 0.25

#: Scale applied to the FiLM MLP's last layer at initialization: keeps ``gamma`` and ``beta``
#: small (about 0.1 for conditions in [0, 1]) so an untrained network is close to unmodulated,
#: while gradients still reach the condition from the first step.
FILM_INIT_SCALE = 0.1


def _init_conv(conv: nn.Conv1d, mean_square_gain: float) -> None:
    """Normal weights with ``fan_in * Var(w) = mean_square_gain``, zero bias."""
    fan_in = conv.in_channels * conv.kernel_size[0]
    nn.init.normal_(conv.weight, 0.0, math.sqrt(mean_square_gain / fan_in))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class TCNBlock(nn.Module):
    """One residual block: dilated (optionally strided) conv -> FiLM -> PReLU, plus a 1x1 path.

    Args:
        in_channels, out_channels: channels of the block's input and output.
        kernel_size: taps of the dilated convolution.
        dilation: spacing of the taps (samples of the block's input).
        stride: output one sample per ``stride`` input samples. Output ``j`` is aligned with
            input sample ``j * stride``: its window ends there when causal and is centred there
            otherwise, and the residual path reads that sample.
        causal: pad on the left only; otherwise pad evenly on both sides.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int = 1,
        stride: int = 1,
        causal: bool = True,
    ):
        super().__init__()
        self.in_channels = check_integer(in_channels, "in_channels", 1)
        self.out_channels = check_integer(out_channels, "out_channels", 1)
        self.kernel_size = check_integer(kernel_size, "kernel_size", 1)
        self.dilation = check_integer(dilation, "dilation", 1)
        self.stride = check_integer(stride, "stride", 1)
        self.causal = bool(causal)
        span = (self.kernel_size - 1) * self.dilation
        self.padding = (span, 0) if self.causal else (span // 2, span - span // 2)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                              dilation=dilation)  # fmt: skip
        self.act = nn.PReLU(out_channels, init=PRELU_INIT)
        self.res = nn.Conv1d(in_channels, out_channels, 1, stride=stride)
        # Each path carries half of the input's mean square, so their sum carries about all of it.
        _init_conv(self.conv, 0.5 * 2.0 / (1.0 + PRELU_INIT**2))
        _init_conv(self.res, 0.5)

    @property
    def span(self) -> int:
        """Input samples one output reads, minus one: ``(kernel_size - 1) * dilation``."""
        return (self.kernel_size - 1) * self.dilation

    def forward(
        self,
        h: torch.Tensor,
        gamma: torch.Tensor | None = None,
        beta: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Apply the block.

        Args:
            h: ``(batch, in_channels, samples)``.
            gamma, beta: ``(batch, out_channels)`` FiLM scale offset and shift, or ``None``.

        Returns:
            ``(batch, out_channels, ceil(samples / stride))``.
        """
        z = self.conv(F.pad(h, self.padding))
        if gamma is not None:
            z = z * (1.0 + gamma.unsqueeze(-1)) + beta.unsqueeze(-1)
        return self.act(z) + self.res(h)


class TCN(nn.Module):
    """Temporal convolutional network, same length in and out, optionally FiLM-conditioned.

    Args:
        in_channels: channels of the input audio.
        out_channels: channels of the output audio.
        n_blocks: residual blocks.
        channels: width of every block.
        kernel_size: taps of the dilated convolutions.
        dilation_growth: block ``i`` has dilation ``dilation_growth**i``.
        cond_dim: size of the conditioning vector (e.g. an effect's normalized parameters);
            0 for an unconditioned network.
        causal: output ``t`` depends on inputs ``<= t`` only (left padding); otherwise the
            padding is split evenly and the receptive field is centred.
        cond_hidden: width of the two hidden layers of the MLP that maps the condition to every
            block's FiLM scale and shift (unused when ``cond_dim == 0``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        n_blocks: int = 4,
        channels: int = 64,
        kernel_size: int = 13,
        dilation_growth: int = 8,
        cond_dim: int = 0,
        causal: bool = True,
        cond_hidden: int = 64,
    ):
        super().__init__()
        self.in_channels = check_integer(in_channels, "in_channels", 1)
        self.out_channels = check_integer(out_channels, "out_channels", 1)
        self.n_blocks = check_integer(n_blocks, "n_blocks", 1)
        self.channels = check_integer(channels, "channels", 1)
        self.kernel_size = check_integer(kernel_size, "kernel_size", 1)
        self.dilation_growth = check_integer(dilation_growth, "dilation_growth", 1)
        self.cond_dim = check_integer(cond_dim, "cond_dim", 0)
        self.causal = bool(causal)
        self.blocks = nn.ModuleList(
            TCNBlock(
                self.in_channels if i == 0 else self.channels,
                self.channels,
                self.kernel_size,
                dilation=self.dilation_growth**i,
                causal=self.causal,
            )
            for i in range(self.n_blocks)
        )
        self.output = nn.Conv1d(self.channels, self.out_channels, 1)
        _init_conv(self.output, 1.0)
        self.film: nn.Sequential | None = None
        if self.cond_dim > 0:
            cond_hidden = check_integer(cond_hidden, "cond_hidden", 1)
            last = nn.Linear(cond_hidden, 2 * self.channels * self.n_blocks)
            with torch.no_grad():
                last.weight.mul_(FILM_INIT_SCALE)
                last.bias.zero_()
            self.film = nn.Sequential(
                nn.Linear(self.cond_dim, cond_hidden),
                nn.PReLU(),
                nn.Linear(cond_hidden, cond_hidden),
                nn.PReLU(),
                last,
            )

    @property
    def receptive_field(self) -> int:
        """Input samples that one output sample depends on: ``1 + sum_i (k - 1) d_i``."""
        return 1 + sum(block.span for block in self.blocks)

    @property
    def lookahead(self) -> int:
        """Future input samples one output sample depends on (0 when causal)."""
        return sum(block.padding[1] for block in self.blocks)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Run the network.

        Args:
            x: ``(batch, in_channels, samples)`` audio.
            cond: ``(batch, cond_dim)`` conditioning vector when ``cond_dim > 0``, else ``None``.

        Returns:
            ``(batch, out_channels, samples)``.
        """
        check_audio(x, "x")
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must be shaped (batch, in_channels={self.in_channels}, samples), "
                f"got shape {tuple(x.shape)}"
            )
        B, C, T = x.shape  # batch, channels, samples
        film = self._film(cond, B)
        h = x
        for i, block in enumerate(self.blocks):
            if film is None:
                h = block(h)
            else:
                h = block(h, film[:, i, 0], film[:, i, 1])
        return self.output(h)

    def _film(self, cond: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """``(batch, n_blocks, 2, channels)`` FiLM scale offsets and shifts, or ``None``."""
        if self.film is None:
            if cond is not None:
                raise ValueError("cond was given but this TCN has cond_dim=0 (unconditioned)")
            return None
        if cond is None:
            raise ValueError(f"cond is required: this TCN has cond_dim={self.cond_dim}")
        if not isinstance(cond, torch.Tensor) or not cond.is_floating_point():
            raise ValueError("cond must be a floating-point torch.Tensor")
        if cond.shape != (batch, self.cond_dim):
            raise ValueError(
                f"cond must be shaped (batch, cond_dim) = ({batch}, {self.cond_dim}), "
                f"got shape {tuple(cond.shape)}"
            )
        check_finite(cond, "cond")
        return self.film(cond).view(batch, self.n_blocks, 2, self.channels)
