"""Post-filters for predicted acoustic features ``(batch, frames, dims)``.

- :class:`Conv2dPostFilter`: the GAN post-filter's generator (Kaneko et al., "Generative
  adversarial network-based postfilter for statistical parametric speech synthesis", ICASSP
  2017): a 2-D CNN over time x feature that sees the input and a noise plane, with the input
  concatenated before every layer, and adds a residual to the input.
- :class:`Conv2dDiscriminator`: its 2-D CNN discriminator, returning every layer's feature map
  for the feature-matching loss.
- :class:`GVPostFilter`: variance scaling toward natural speech's global variance.
- :class:`MultiStreamPostFilter`: trained generators applied stream by stream on raw
  (un-normalized) multi-stream features, e.g. an ``mgc`` and a ``bap`` post-filter merged.

Sizes and defaults follow NNSVS's post-filter recipes (``postfilter_mgc.yaml``,
``postfilter_bap.yaml``), which train one post-filter per stream.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from diffx.functional.postfilter import (
    StreamLayout,
    global_variance,
    moving_average,
    variance_scaling,
)

NOISE_TYPES = ("frame_wise", "bin_wise")


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2 or any(v < 1 or v % 2 == 0 for v in pair):
        raise ValueError(f"{name} must be two odd sizes >= 1 (time, feature), got {value}")
    return pair  # type: ignore[return-value]


def _is_channels_last(weight: torch.Tensor) -> bool:
    return not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last)


def _kaiming(module: nn.Module) -> None:
    # NNSVS initialises its post-filters with Kaiming-normal weights and zero biases.
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class Conv2dPostFilter(nn.Module):
    """Residual 2-D CNN generator with a noise input.

    Four ``kernel_size`` convolutions over the ``(frames, dims)`` plane, ReLU between them,
    channels ``C, 2C, C, 1``; the input plane is concatenated to every layer's input, and the
    last layer's output is added to the input. Padding keeps the plane's size.

    Noise: ``"frame_wise"`` draws one value per frame and maps it to every dimension with a
    learned ``Linear(1, in_dim)``; ``"bin_wise"`` draws one value per frame and dimension. In
    eval mode a ``smoothed_width``-frame moving average smooths the noise over time (NNSVS's
    inference-time smoothing: fewer audible artifacts, slightly smoother output).

    Channels-last (``module.to(memory_format=torch.channels_last)``): the convolutions run
    in that memory format (oneDNN's faster kernels on CPU), and layers 2-4 convolve the hidden
    maps and the input plane apart and add the two, instead of convolving their
    concatenation: the same function, with float32 rounding that differs (outputs ~1e-6
    relative). Contiguous weights (the default) compute exactly NNSVS's ``Conv2dPostFilter``.

    Args:
        in_dim: feature dims the filter sees.
        channels: ``C``.
        kernel_size: ``(time, feature)``, odd.
        noise_type: ``"frame_wise"`` or ``"bin_wise"``.
        noise_scale: standard deviation of the noise.
        smoothed_width: frames of the inference-time noise smoothing (0 or 1: none).
    """

    def __init__(
        self,
        in_dim: int,
        channels: int = 64,
        kernel_size: int | Sequence[int] = (5, 5),
        noise_type: str = "frame_wise",
        noise_scale: float = 1.0,
        smoothed_width: int = 0,
    ) -> None:
        super().__init__()
        if in_dim < 1 or channels < 1:
            raise ValueError(f"in_dim and channels must be >= 1, got {in_dim}, {channels}")
        if noise_type not in NOISE_TYPES:
            raise ValueError(f"noise_type must be one of {NOISE_TYPES}, got {noise_type!r}")
        if smoothed_width < 0 or noise_scale < 0:
            raise ValueError("smoothed_width and noise_scale must be >= 0")
        kernel = _pair(kernel_size, "kernel_size")
        padding = (kernel[0] // 2, kernel[1] // 2)
        C = channels
        self.in_dim, self.channels, self.kernel_size = in_dim, channels, kernel
        self.noise_type, self.noise_scale = noise_type, float(noise_scale)
        self.smoothed_width = int(smoothed_width)
        self.conv1 = nn.Conv2d(2, C, kernel, padding=padding)
        self.conv2 = nn.Conv2d(C + 1, 2 * C, kernel, padding=padding)
        self.conv3 = nn.Conv2d(2 * C + 1, C, kernel, padding=padding)
        self.conv4 = nn.Conv2d(C + 1, 1, kernel, padding=padding)
        self.noise_map = nn.Linear(1, in_dim) if noise_type == "frame_wise" else None
        _kaiming(self)
        # The last layer starts at zero, so the untrained post-filter is the identity. (NNSVS
        # draws it Kaiming-normal too; on the shipped pairs that residual starts with 1.6x the
        # input's standard deviation, and the first few hundred steps only unlearn that noise,
        # overshooting into smoother output than the prediction.)
        nn.init.zeros_(self.conv4.weight)

    def config(self) -> dict:
        """The constructor arguments (to rebuild the module around a saved state)."""
        return {
            "in_dim": self.in_dim,
            "channels": self.channels,
            "kernel_size": list(self.kernel_size),
            "noise_type": self.noise_type,
            "noise_scale": self.noise_scale,
            "smoothed_width": self.smoothed_width,
        }

    def noise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The noise plane ``(batch, 1, frames, dims)`` for input ``x (batch, frames, dims)``."""
        B, T, D = x.shape
        smooth = not self.training and self.smoothed_width > 1
        if self.noise_type == "frame_wise":
            z = torch.randn(B, T, generator=generator, device=x.device, dtype=x.dtype)
            z = moving_average(z, self.smoothed_width) if smooth else z
            z = self.noise_map(z[..., None] * self.noise_scale)  # (B, T, D)
        else:
            z = torch.randn(B, D, T, generator=generator, device=x.device, dtype=x.dtype)
            z = moving_average(z, self.smoothed_width) if smooth else z
            z = z.transpose(1, 2) * self.noise_scale
        return z[:, None]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x (batch, frames, in_dim)`` (normalized features) -> same shape."""
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(
                f"expected (batch, frames, {self.in_dim}) features, got {tuple(x.shape)}"
            )
        plane = x[:, None]
        relu = torch.relu_  # in place on each convolution's fresh output: one map less
        y = relu(self.conv1(torch.cat([plane, self.noise(x, generator)], dim=1)))
        if _is_channels_last(self.conv2.weight):
            y = relu(self._plane_apart(self.conv2, plane, y))
            y = relu(self._plane_apart(self.conv3, plane, y))
            residual = self._plane_apart(self.conv4, plane, y)
        else:
            y = relu(self.conv2(torch.cat([plane, y], dim=1)))
            y = relu(self.conv3(torch.cat([plane, y], dim=1)))
            residual = self.conv4(torch.cat([plane, y], dim=1))
        return (plane + residual)[:, 0]

    @staticmethod
    def _plane_apart(conv: nn.Conv2d, plane: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """``conv(cat([plane, maps], dim=1))`` as the sum of two convolutions: the maps' (a
        channel count oneDNN's blocked kernels fit, 64 or 128, not 65 or 129) and the input
        plane's (no input gradient unless the features need one). Float32 rounding differs
        from the concatenated form's."""
        weight, pad = conv.weight, conv.padding
        out = F.conv2d(maps, weight[:, 1:], conv.bias, padding=pad)
        return out.add_(F.conv2d(plane, weight[:, :1], None, padding=pad))


class Conv2dDiscriminator(nn.Module):
    """2-D CNN discriminator over the ``(frames, dims)`` plane (Kaneko et al., 2017).

    Channels ``C, 2C, 4C, 2C`` with LeakyReLU(0.2), the last three with stride 2 in time, then
    a convolution to one channel: a map of real/fake scores.

    Args:
        channels: ``C``.
        kernel_size: ``(time, feature)``, odd.
        padding: ``(time, feature)`` zero padding of every convolution; ``None`` keeps the
            sizes (``kernel // 2``), which one-dimensional streams (``bap`` at 16 kHz) need.
            NNSVS's ``mgc`` recipe uses ``(0, 0)`` (the maps shrink), its ``bap`` recipe
            ``None``.
    """

    def __init__(
        self,
        channels: int = 32,
        kernel_size: int | Sequence[int] = (7, 3),
        padding: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        kernel = _pair(kernel_size, "kernel_size")
        if padding is None:
            padding = (kernel[0] // 2, kernel[1] // 2)
        padding = tuple(int(p) for p in padding)
        if len(padding) != 2 or min(padding) < 0:
            raise ValueError(f"padding must be two sizes >= 0 (time, feature), got {padding}")
        self.padding = padding
        C = channels
        widths = [(1, C, 1), (C, 2 * C, 2), (2 * C, 4 * C, 2), (4 * C, 2 * C, 2)]
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(i, o, kernel, stride=(s, 1), padding=padding),
                nn.LeakyReLU(0.2, inplace=True),  # on the convolution's fresh output
            )
            for i, o, s in widths
        )
        self.score = nn.Conv2d(2 * C, 1, kernel, padding=padding)
        _kaiming(self)

    def output_size(self, frames: int, dims: int) -> tuple[int, int]:
        """``(frames', dims')`` of the score map for a ``(frames, dims)`` plane."""
        for conv in [layer[0] for layer in self.layers] + [self.score]:
            (kt, kf), (st, sf), (pt, pf) = conv.kernel_size, conv.stride, conv.padding
            frames = (frames + 2 * pt - kt) // st + 1
            dims = (dims + 2 * pf - kf) // sf + 1
        return frames, dims

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x (batch, frames, dims)`` -> every layer's output; the last is the score map
        ``(batch, 1, frames', dims')`` (``frames' ~ frames / 8``; ``dims' = dims`` with the
        default padding).

        Raises:
            ValueError: a wrong shape, or a plane too small for the unpadded convolutions.
        """
        if x.dim() != 3:
            raise ValueError(f"expected (batch, frames, dims) features, got {tuple(x.shape)}")
        if min(self.output_size(x.shape[1], x.shape[2])) < 1:
            raise ValueError(
                f"features of {tuple(x.shape[1:])} (frames, dims) are too small for the "
                f"discriminator's padding {self.padding}; use padding None"
            )
        y = x[:, None]
        outputs = []
        for layer in self.layers:
            y = layer(y)
            outputs.append(y)
        outputs.append(self.score(y))
        return outputs


def _as_layout(layout: StreamLayout | dict[str, int]) -> StreamLayout:
    return layout if isinstance(layout, StreamLayout) else StreamLayout.from_dict(layout)


class GVPostFilter(nn.Module):
    """Global-variance post-filter: :func:`diffx.functional.variance_scaling` of chosen
    streams of raw multi-stream features toward natural speech's global variance.

    Args:
        global_variance: ``(dims,)`` over the whole layout (only the chosen streams' entries
            are used).
        layout: the streams of the features.
        streams: ``{stream: offset}``; dims below the offset pass unchanged (NNSVS: ``mgc``
            from dimension 2 on).
        strength: 1 reaches the global variance, 0 leaves the input (see
            :func:`~diffx.functional.variance_scaling`).
        voiced_only: statistics from, and scaling of, voiced frames only (``vuv > 0.5``),
            when the layout has a ``vuv`` stream; NNSVS likewise scales note frames only.
    """

    def __init__(
        self,
        global_variance: torch.Tensor | np.ndarray,
        layout: StreamLayout | dict[str, int],
        streams: dict[str, int] | None = None,
        strength: float = 1.0,
        voiced_only: bool = True,
    ) -> None:
        super().__init__()
        self.layout = _as_layout(layout)
        gv = torch.as_tensor(np.asarray(global_variance), dtype=torch.float32)
        if gv.shape != (self.layout.dims,):
            raise ValueError(
                f"global_variance must have the layout's {self.layout.dims} dims, got "
                f"{tuple(gv.shape)}"
            )
        self.streams = dict(streams if streams is not None else {"mgc": 2})
        for name, offset in self.streams.items():
            size = (
                self.layout.sizes[self.layout.names.index(name)]
                if name in self.layout.names
                else None
            )
            if size is None:
                raise ValueError(
                    f"unknown stream {name!r}; the layout has {list(self.layout.names)}"
                )
            if not 0 <= int(offset) < size:
                raise ValueError(f"offset of {name!r} must be in [0, {size}), got {offset}")
        if not np.isfinite(strength) or strength < 0:
            raise ValueError(f"strength must be a finite number >= 0, got {strength}")
        self.strength = float(strength)
        self.voiced_only = bool(voiced_only) and "vuv" in self.layout.names
        self.register_buffer("global_variance", gv)

    def frame_mask(self, features: torch.Tensor) -> torch.Tensor | None:
        if not self.voiced_only:
            return None
        return self.layout.voiced(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features (..., frames, dims)`` raw -> same shape, the chosen streams scaled."""
        if features.shape[-1] != self.layout.dims:
            raise ValueError(
                f"features have {features.shape[-1]} dims; the layout needs {self.layout.dims}"
            )
        mask = self.frame_mask(features)
        if mask is not None and not bool(mask.any()):
            return features  # nothing voiced: nothing to scale
        out = features.clone()
        for name, offset in self.streams.items():
            span = self.layout.span(name)
            out[..., span] = variance_scaling(
                features[..., span],
                self.global_variance[span],
                self.strength,
                int(offset),
                frame_mask=mask,
            )
        return out

    @classmethod
    def from_utterances(
        cls,
        utterances: Sequence[np.ndarray],
        layout: StreamLayout | dict[str, int],
        streams: dict[str, int] | None = None,
        strength: float = 1.0,
        voiced_only: bool = True,
    ) -> GVPostFilter:
        """Statistics from natural ``(frames, dims)`` utterances (see
        :func:`diffx.functional.global_variance`)."""
        layout = _as_layout(layout)
        masks = None
        if voiced_only and "vuv" in layout.names:
            masks = [layout.voiced(np.asarray(u)) for u in utterances]
        gv = global_variance(utterances, masks)
        return cls(gv, layout, streams, strength, voiced_only)

    def save(self, path: str | os.PathLike) -> None:
        """Write the statistics and settings as ``.npz``."""
        np.savez(
            path,
            global_variance=self.global_variance.numpy(),
            layout_names=np.array(self.layout.names),
            layout_sizes=np.array(self.layout.sizes),
            stream_names=np.array(list(self.streams)),
            stream_offsets=np.array(list(self.streams.values()), dtype=np.int64),
            strength=self.strength,
            voiced_only=self.voiced_only,
        )

    @classmethod
    def load(cls, path: str | os.PathLike, strength: float | None = None) -> GVPostFilter:
        """Read :meth:`save`'s file; ``strength`` overrides the saved one."""
        try:
            with np.load(path) as data:
                layout = StreamLayout(tuple(data["layout_names"]), tuple(data["layout_sizes"]))
                streams = dict(zip(data["stream_names"].tolist(), data["stream_offsets"].tolist()))
                return cls(
                    data["global_variance"],
                    layout,
                    streams,
                    float(data["strength"]) if strength is None else strength,
                    bool(data["voiced_only"]),
                )
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"{path}: not a GV post-filter file ({err})") from err


class MultiStreamPostFilter(nn.Module):
    """Trained generators applied stream by stream to raw multi-stream features.

    Each stream's dims from its offset on are normalized with the scaler the generators were
    trained with (``mean``, ``variance`` over the whole layout), filtered, and de-normalized;
    other streams and dims pass unchanged.

    Args:
        layout: the streams of the features.
        filters: ``{stream: Conv2dPostFilter}``.
        offsets: ``{stream: offset}``.
        mean, variance: ``(dims,)`` the feature scaler.
    """

    def __init__(
        self,
        layout: StreamLayout | dict[str, int],
        filters: dict[str, Conv2dPostFilter],
        offsets: dict[str, int],
        mean: torch.Tensor | np.ndarray,
        variance: torch.Tensor | np.ndarray,
    ) -> None:
        super().__init__()
        self.layout = _as_layout(layout)
        if set(filters) != set(offsets):
            raise ValueError(f"filters {sorted(filters)} and offsets {sorted(offsets)} differ")
        for name, module in filters.items():
            span = self.layout.span(name)
            expected = span.stop - span.start - int(offsets[name])
            if module.in_dim != expected:
                raise ValueError(
                    f"the {name!r} post-filter takes {module.in_dim} dims; the layout leaves "
                    f"{expected} after offset {offsets[name]}"
                )
        self.filters = nn.ModuleDict(filters)
        self.offsets = {name: int(o) for name, o in offsets.items()}
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        variance = torch.as_tensor(np.asarray(variance), dtype=torch.float32)
        # A constant dimension passes unscaled (as FeatureScaler does), not divided by ~0.
        self.register_buffer(
            "scale", torch.where(variance > 1e-12, variance, torch.ones_like(variance)).sqrt()
        )

    def forward(
        self, features: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``features (batch, frames, dims)`` raw -> same shape."""
        if features.dim() != 3 or features.shape[-1] != self.layout.dims:
            raise ValueError(
                f"expected (batch, frames, {self.layout.dims}) features, got "
                f"{tuple(features.shape)}"
            )
        out = features.clone()
        for name, module in self.filters.items():
            span = self.layout.span(name)
            dims = slice(span.start + self.offsets[name], span.stop)
            normalized = (features[..., dims] - self.mean[dims]) / self.scale[dims]
            out[..., dims] = module(normalized, generator) * self.scale[dims] + self.mean[dims]
        return out

    def state(self) -> dict:
        """Everything needed to rebuild the filter (see :meth:`from_state`)."""
        return {
            "format": "diffx-postfilter",
            "version": 1,
            "layout": self.layout.to_dict(),
            "offsets": dict(self.offsets),
            "configs": {name: m.config() for name, m in self.filters.items()},
            "state_dicts": {name: m.state_dict() for name, m in self.filters.items()},
            "mean": self.mean.cpu(),
            "variance": (self.scale**2).cpu(),
        }

    @classmethod
    def from_state(cls, state: dict) -> MultiStreamPostFilter:
        if state.get("format") != "diffx-postfilter":
            raise ValueError("not a diffx post-filter (no 'format: diffx-postfilter')")
        filters = {}
        for name, config in state["configs"].items():
            module = Conv2dPostFilter(**config)
            module.load_state_dict(state["state_dicts"][name])
            filters[name] = module
        return cls(state["layout"], filters, state["offsets"], state["mean"], state["variance"])


MERGE_TOLERANCE = 1e-5
"""Relative difference allowed between the scalers of post-filters that are merged."""


def merge_postfilters(models: list[MultiStreamPostFilter]) -> MultiStreamPostFilter:
    """One post-filter holding the generators of ``models`` (e.g. an ``mgc`` and a ``bap``
    post-filter trained separately, NNSVS's recommended recipe).

    Raises:
        ValueError: different stream layouts or scalers, or a stream filtered twice.
    """
    if len(models) < 2:
        raise ValueError("merging needs at least two post-filters")
    first = models[0]
    filters, offsets = {}, {}
    for model in models:
        if model.layout != first.layout:
            raise ValueError(
                f"stream layouts differ: {first.layout.to_dict()} vs {model.layout.to_dict()}"
            )
        for name in ("mean", "scale"):
            a, b = getattr(first, name), getattr(model, name)
            if not torch.allclose(a, b, rtol=MERGE_TOLERANCE, atol=MERGE_TOLERANCE):
                raise ValueError(
                    f"the post-filters were trained with different feature scalers ({name}); "
                    "train them on the same pairs"
                )
        for stream, module in model.filters.items():
            if stream in filters:
                raise ValueError(f"stream {stream!r} is post-filtered by more than one input")
            filters[stream], offsets[stream] = module, model.offsets[stream]
    return MultiStreamPostFilter(first.layout, filters, offsets, first.mean, first.scale**2)
