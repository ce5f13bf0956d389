"""The Neural Amp Modeler WaveNet (a causal, dilated temporal convolutional network).

Written from the architecture description of Neural Amp Modeler (S. Atkinson,
https://github.com/sdatkinson/neural-amp-modeler, ``nam/models/wavenet``), itself after
WaveNet (van den Oord et al., 2016) and Wright, Damskagg & Valimaki, "Real-time black-box
modelling with recurrent neural networks" / Damskagg et al., "Real-time modeling of audio
distortion circuits with deep learning" (2019). The network is a stack of *layer arrays*;
each array is

- ``rechannel``: 1x1 convolution ``input_size -> channels``, no bias;
- one *layer* per dilation ``d``: ``z = conv_d(x) + mixer(c)`` where ``conv_d`` is a dilated
  causal convolution ``channels -> channels`` (``2 * channels`` when gated) with bias and
  ``mixer`` a 1x1 convolution of the condition ``c`` (the network input) without bias;
  ``a = act(z)`` (gated: ``act(z[:channels]) * sigmoid(z[channels:])``); the residual path
  continues with ``x + layer1x1(a)`` (1x1, bias) and ``a`` is summed into the array's head
  accumulator;
- ``head_rechannel``: convolution ``channels -> head_size`` (kernel ``head_kernel_size``,
  bias optional) of the summed head terms.

An array's head output is added to the next array's head accumulator (so an array's
``head_size`` must equal the next array's ``channels``) and the next array takes the previous
one's residual output as its input. The last array's head output times ``head_scale`` is the
network output (so the last layer's ``layer1x1`` is unused: it gets no gradient, but its
weights are part of the exported vector, as in NAM).

The NAM "standard" model is :func:`standard_config`: two arrays of ten layers (kernel 3,
dilations 1..512, tanh, not gated), 16 then 8 channels, head sizes 8 then 1, ``head_scale``
0.02; its receptive field is 1 + 2 * 2 * 1023 = 4093 samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from diffx._validation import check_audio

#: Activation names as NAM writes them in ``.nam`` files, and the torch modules they mean.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "Tanh": nn.Tanh,
    "ReLU": nn.ReLU,
    "Sigmoid": nn.Sigmoid,
    "Hardtanh": nn.Hardtanh,
    "LeakyReLU": nn.LeakyReLU,
    "SiLU": nn.SiLU,
    "Hardswish": nn.Hardswish,
    "Softsign": nn.Softsign,
}

_NAM_DILATIONS = tuple(2**i for i in range(10))  # 1, 2, 4, ..., 512


@dataclass(frozen=True)
class LayerArrayConfig:
    """Configuration of one WaveNet layer array (names as in NAM's ``.nam`` config).

    Attributes:
        input_size: channels of the array's input (1 for the first array, the previous
            array's ``channels`` otherwise).
        condition_size: channels of the condition (the network input), 1 for mono audio.
        channels: width of the residual path.
        head_size: channels of the array's head output.
        kernel_size: kernel of the dilated convolutions, one int for all layers or one per
            layer.
        dilations: one dilation per layer (samples).
        activation: a name from :data:`ACTIVATIONS`, one for all layers or one per layer.
        gated: gated activation ``act(z1) * sigmoid(z2)`` (doubles the dilated conv's outputs).
        head_bias: whether ``head_rechannel`` has a bias.
        head_kernel_size: kernel of ``head_rechannel`` (1 in every NAM preset).
    """

    input_size: int
    condition_size: int
    channels: int
    head_size: int
    kernel_size: int | tuple[int, ...] = 3
    dilations: tuple[int, ...] = _NAM_DILATIONS
    activation: str | tuple[str, ...] = "Tanh"
    gated: bool = False
    head_bias: bool = False
    head_kernel_size: int = 1

    def __post_init__(self) -> None:
        for name in ("input_size", "condition_size", "channels", "head_size", "head_kernel_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        dilations = tuple(self.dilations)
        if not dilations or any(not isinstance(d, int) or d < 1 for d in dilations):
            raise ValueError(
                f"dilations must be a non-empty list of positive ints, got {dilations}"
            )
        object.__setattr__(self, "dilations", dilations)
        n = len(dilations)
        kernels = (self.kernel_size,) * n if isinstance(self.kernel_size, int) else self.kernel_size
        kernels = tuple(kernels)
        if len(kernels) != n or any(not isinstance(k, int) or k < 1 for k in kernels):
            raise ValueError(
                f"kernel_size must be a positive int or {n} positive ints (one per dilation), "
                f"got {self.kernel_size!r}"
            )
        acts = (self.activation,) * n if isinstance(self.activation, str) else self.activation
        acts = tuple(acts)
        if len(acts) != n:
            raise ValueError(f"activation must be a name or {n} names, got {self.activation!r}")
        for a in acts:
            if a not in ACTIVATIONS:
                raise ValueError(f"unknown activation {a!r}; expected one of {sorted(ACTIVATIONS)}")
        # Stored as one value when uniform, so configs round-trip to the compact NAM form.
        object.__setattr__(self, "kernel_size", kernels[0] if len(set(kernels)) == 1 else kernels)
        object.__setattr__(self, "activation", acts[0] if len(set(acts)) == 1 else acts)

    @property
    def kernel_sizes(self) -> tuple[int, ...]:
        """One kernel size per layer."""
        k = self.kernel_size
        return (k,) * len(self.dilations) if isinstance(k, int) else k

    @property
    def activations(self) -> tuple[str, ...]:
        """One activation name per layer."""
        a = self.activation
        return (a,) * len(self.dilations) if isinstance(a, str) else a

    @property
    def receptive_field(self) -> int:
        """Samples of input one output sample of this array depends on."""
        rf = 1 + sum((k - 1) * d for k, d in zip(self.kernel_sizes, self.dilations))
        return rf + self.head_kernel_size - 1


def standard_config() -> list[LayerArrayConfig]:
    """The NAM "standard" WaveNet's layer arrays (use with ``head_scale=0.02``)."""
    return [
        LayerArrayConfig(input_size=1, condition_size=1, channels=16, head_size=8),
        LayerArrayConfig(input_size=16, condition_size=1, channels=8, head_size=1, head_bias=True),
    ]


@dataclass
class WaveNetState:
    """Streaming state: the last ``receptive_field - 1`` input samples, ``(batch, C, R - 1)``."""

    history: torch.Tensor
    samples_seen: int = field(default=0)


class _Layer(nn.Module):
    def __init__(
        self, channels: int, condition_size: int, kernel_size: int, dilation: int, act: str, gated
    ):
        super().__init__()
        mid = 2 * channels if gated else channels
        self.channels = channels
        self.gated = gated
        self.conv = nn.Conv1d(channels, mid, kernel_size, dilation=dilation, bias=True)
        self.input_mixer = nn.Conv1d(condition_size, mid, 1, bias=False)
        self.activation = ACTIVATIONS[act]()
        self.layer1x1 = nn.Conv1d(channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.conv(x)  # valid convolution: (k - 1) * d samples shorter than x
        n = z.shape[-1]
        z = z + self.input_mixer(c[..., c.shape[-1] - n :])
        if self.gated:
            a = self.activation(z[:, : self.channels]) * torch.sigmoid(z[:, self.channels :])
        else:
            a = self.activation(z)
        return x[..., x.shape[-1] - n :] + self.layer1x1(a), a


class _LayerArray(nn.Module):
    def __init__(self, cfg: LayerArrayConfig):
        super().__init__()
        self.config = cfg
        self.rechannel = nn.Conv1d(cfg.input_size, cfg.channels, 1, bias=False)
        self.layers = nn.ModuleList(
            _Layer(cfg.channels, cfg.condition_size, k, d, a, cfg.gated)
            for k, d, a in zip(cfg.kernel_sizes, cfg.dilations, cfg.activations)
        )
        self.head_rechannel = nn.Conv1d(
            cfg.channels, cfg.head_size, cfg.head_kernel_size, bias=cfg.head_bias
        )

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, head: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.rechannel(x)
        for layer in self.layers:
            x, a = layer(x, c)
            n = a.shape[-1]
            head = a if head is None else head[..., head.shape[-1] - n :] + a
        head = self.head_rechannel(head)
        return x[..., x.shape[-1] - head.shape[-1] :], head

    def nam_tensors(self) -> Iterator[torch.Tensor]:
        yield self.rechannel.weight
        for layer in self.layers:
            yield from (layer.conv.weight, layer.conv.bias, layer.input_mixer.weight)
            yield from (layer.layer1x1.weight, layer.layer1x1.bias)
        yield self.head_rechannel.weight
        if self.head_rechannel.bias is not None:
            yield self.head_rechannel.bias


class WaveNet(nn.Module):
    """Neural Amp Modeler WaveNet: a causal dilated convolutional network on mono audio.

    Args:
        layers: the layer arrays, as :class:`LayerArrayConfig` or dicts of its fields
            (default: :func:`standard_config`). Array ``i``'s ``head_size`` must equal array
            ``i + 1``'s ``channels`` and its ``channels`` array ``i + 1``'s ``input_size``.
        head_scale: factor on the last array's head output (0.02 in every NAM preset).
        sample_rate: the sample rate (Hz) the model was trained at, or ``None``; kept for
            export, never used in the computation.

    The output at sample ``n`` depends on inputs ``n - R + 1 .. n`` where ``R`` is
    :attr:`receptive_field`. :meth:`forward` treats the signal as preceded by zeros, so the
    output has the input's length (NAM itself returns only the ``L - R + 1`` fully determined
    samples); :meth:`process_block` carries the real past across blocks instead.
    """

    def __init__(
        self,
        layers: Sequence[LayerArrayConfig | Mapping] | None = None,
        head_scale: float = 0.02,
        sample_rate: float | None = None,
    ):
        super().__init__()
        if layers is None:
            layers = standard_config()
        configs = [c if isinstance(c, LayerArrayConfig) else LayerArrayConfig(**c) for c in layers]
        if not configs:
            raise ValueError("layers must hold at least one layer array")
        for i, (a, b) in enumerate(zip(configs[:-1], configs[1:])):
            if a.head_size != b.channels:
                raise ValueError(
                    f"layers[{i}].head_size ({a.head_size}) must equal layers[{i + 1}].channels "
                    f"({b.channels}): head outputs are summed into the next array's head"
                )
            if a.channels != b.input_size:
                raise ValueError(
                    f"layers[{i}].channels ({a.channels}) must equal layers[{i + 1}].input_size "
                    f"({b.input_size})"
                )
        cond = {c.condition_size for c in configs}
        if cond != {configs[0].input_size}:
            raise ValueError(
                "every condition_size must equal layers[0].input_size (the condition is the "
                f"network input), got condition sizes {sorted(cond)} and input_size "
                f"{configs[0].input_size}"
            )
        self.layer_configs = tuple(configs)
        self.arrays = nn.ModuleList(_LayerArray(c) for c in configs)
        self.head_scale = float(head_scale)
        self.sample_rate = sample_rate

    @property
    def in_channels(self) -> int:
        return self.layer_configs[0].input_size

    @property
    def out_channels(self) -> int:
        return self.layer_configs[-1].head_size

    @property
    def receptive_field(self) -> int:
        """Input samples each output sample depends on: ``1 + sum(R_array - 1)``."""
        return 1 + sum(c.receptive_field - 1 for c in self.layer_configs)

    def config(self) -> dict:
        """Constructor arguments as plain data (``WaveNet(**model.config())`` rebuilds it)."""
        return {
            "layers": [asdict(c) for c in self.layer_configs],
            "head_scale": self.head_scale,
            "sample_rate": self.sample_rate,
        }

    def _check_input(self, x: torch.Tensor, name: str) -> None:
        check_audio(x, name)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name} must have {self.in_channels} channel(s), got shape {tuple(x.shape)}"
            )

    def _valid(self, x: torch.Tensor) -> torch.Tensor:
        # Valid (unpadded) evaluation: (B, C, L) -> (B, C_out, L - R + 1).
        y, head = x, None
        for array in self.arrays:
            y, head = array(y, x, head)
        return self.head_scale * head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Process a whole signal, assuming silence before it.

        Args:
            x: ``(batch, 1, samples)`` audio (``in_channels`` channels in general).

        Returns:
            ``(batch, 1, samples)`` output; sample ``n`` depends only on ``x[..., :n + 1]``.
        """
        self._check_input(x, "x")
        return self._valid(F.pad(x, (self.receptive_field - 1, 0)))

    def initial_state(
        self, batch_size: int, dtype: torch.dtype | None = None, device=None
    ) -> WaveNetState:
        """A state of silence for :meth:`process_block`."""
        p = next(self.parameters())
        history = torch.zeros(
            batch_size,
            self.in_channels,
            self.receptive_field - 1,
            dtype=dtype or p.dtype,
            device=device or p.device,
        )
        return WaveNetState(history)

    def process_block(
        self, x: torch.Tensor, state: WaveNetState | None = None
    ) -> tuple[torch.Tensor, WaveNetState]:
        """Process one block of a stream; concatenated outputs equal :meth:`forward`'s.

        Args:
            x: ``(batch, 1, block)`` audio, any block length >= 1.
            state: the state returned for the previous block, or ``None`` at the start.

        Returns:
            ``(batch, 1, block)`` output and the state for the next block (the last
            ``receptive_field - 1`` input samples).
        """
        self._check_input(x, "x")
        if state is None:
            state = self.initial_state(x.shape[0], x.dtype, x.device)
        if state.history.shape[:2] != x.shape[:2]:
            raise ValueError(
                f"state holds history shaped {tuple(state.history.shape)}, which does not "
                f"match x shaped {tuple(x.shape)}"
            )
        buf = torch.cat([state.history.to(x), x], dim=-1)
        keep = self.receptive_field - 1
        new_state = WaveNetState(buf[..., buf.shape[-1] - keep :], state.samples_seen + x.shape[-1])
        return self._valid(buf), new_state

    def nam_tensors(self) -> list[torch.Tensor]:
        """Parameters in NAM's flat export order (``head_scale``, a float, follows them).

        Per layer array: ``rechannel.weight``; for each layer ``conv.weight``, ``conv.bias``,
        ``input_mixer.weight``, ``layer1x1.weight``, ``layer1x1.bias``; then
        ``head_rechannel.weight`` and, if present, ``head_rechannel.bias``. Each tensor is
        flattened row-major in torch's ``Conv1d`` layout ``(out, in, kernel)``.
        """
        return [t for array in self.arrays for t in array.nam_tensors()]

    def num_nam_weights(self) -> int:
        """Length of the flat NAM weight vector (all parameters plus ``head_scale``)."""
        return sum(t.numel() for t in self.nam_tensors()) + 1

    def export_weights(self) -> torch.Tensor:
        """The flat NAM weight vector, float64 on the CPU (see :meth:`nam_tensors`)."""
        parts = [t.detach().reshape(-1).to("cpu", torch.float64) for t in self.nam_tensors()]
        parts.append(torch.tensor([self.head_scale], dtype=torch.float64))
        return torch.cat(parts)

    def import_weights(self, weights: Sequence[float] | torch.Tensor) -> None:
        """Set every parameter and ``head_scale`` from a flat NAM weight vector."""
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        expected = self.num_nam_weights()
        if w.numel() != expected:
            raise ValueError(
                f"weights has {w.numel()} values; this configuration expects {expected}"
            )
        i = 0
        with torch.no_grad():
            for t in self.nam_tensors():
                t.copy_(w[i : i + t.numel()].reshape(t.shape))
                i += t.numel()
        self.head_scale = float(w[i])
