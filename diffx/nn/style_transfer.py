"""Audio-effect style transfer networks: audio encoders and the parameter controller.

After Steinmetz, Bryan & Reiss, "Style Transfer of Audio Effects with Differentiable Signal
Processing" (DeepAFx-ST, JAES 2022). A shared encoder embeds the input recording and a reference
recording whose production style is to be matched; a controller maps the two embeddings to the
normalized parameters of an effect chain, which processes the input. Two encoders are here:

- :class:`SpectralEncoder` reads a power-law compressed STFT magnitude (the paper's front end,
  ``|X|^0.3``) with a small 2-D CNN (the paper uses EfficientNet-B2) and mean-pools it;
- :class:`TCNEncoder` reads the waveform with strided, dilated residual 1-D convolutions (the
  blocks of :class:`diffx.nn.TCN`) and pools the mean and standard deviation over time.

Both accept recordings of any length (above a minimum) and return ``(batch, embed_dim)``; in
eval mode every item's embedding is independent of the rest of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from diffx._validation import check_audio, check_finite, check_integer, check_sample_rate
from diffx.nn.tcn import TCNBlock

#: Exponent of the magnitude compression ``|X|^0.3`` (DeepAFx-ST).
MAGNITUDE_POWER = 0.3

#: Added to the squared magnitude before compression: the front end is
#: ``(|X|^2 + MAGNITUDE_EPS)^(MAGNITUDE_POWER / 2)``. ``|X|^0.3`` has an infinite derivative at
#: ``|X| = 0`` (and ``|X|`` an undefined one), so silence would give NaN gradients; with the
#: epsilon the derivative is finite everywhere. It floors the magnitude at 1e-5 (148 dB below
#: the peak bin of a full-scale sine, ``n_fft / 4 = 256`` at ``n_fft = 1024``), i.e. the
#: compressed value at 10^-1.5 ~= 0.032.
MAGNITUDE_EPS = 1e-10

COMPRESSIONS = ("power", "log")
"""Magnitude compressions of :class:`SpectralEncoder`'s front end."""

#: Added to the variance before the square root in :class:`TCNEncoder`'s standard-deviation
#: pooling, whose derivative is infinite at zero variance (e.g. silence, where every frame of a
#: channel holds the same bias-driven value).
STD_EPS = 1e-8

#: Lower edge (Hz) of the lowest band of :meth:`SpectralEncoder.level_features`' spectrum.
LEVEL_BAND_LOW_HZ = 40.0

#: Quantiles of the frame levels in :meth:`SpectralEncoder.level_features`.
FRAME_LEVEL_QUANTILES = (0.1, 0.5, 0.9, 0.99)

#: :meth:`SpectralEncoder.level_features` divides its dB values by this, bringing levels of
#: typical program material (-60 to 0 dB) to order 1 beside the BatchNorm-ed CNN features.
LEVEL_SCALE_DB = 20.0

#: Power floor of the level features (-100 dB), so silence gives finite values.
LEVEL_EPS = 1e-10


def _db(power: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(power + LEVEL_EPS)


def _check_mono(x: torch.Tensor, name: str, min_samples: int) -> tuple[int, int]:
    """Check ``x`` is finite ``(batch, 1, samples >= min_samples)`` audio; return (B, T)."""
    check_audio(x, name)
    if x.dim() != 3 or x.shape[1] != 1:
        raise ValueError(f"{name} must be shaped (batch, 1, samples), got shape {tuple(x.shape)}")
    if x.shape[-1] < min_samples:
        raise ValueError(
            f"{name} must have at least {min_samples} samples, got {x.shape[-1]} "
            f"(shape {tuple(x.shape)})"
        )
    return x.shape[0], x.shape[-1]


class SpectralEncoder(nn.Module):
    """Embed audio from its compressed STFT magnitude with a 2-D CNN.

    Front end: STFT with a periodic Hann window of ``n_fft`` samples, hop ``hop_length``, no
    centering or padding (frames ``1 + (T - n_fft) // hop_length``; a trailing partial frame is
    dropped), compressed to ``(|X|^2 + MAGNITUDE_EPS)^0.15`` (about ``|X|^0.3``). Then, per entry
    of ``channels``, a block ``Conv2d(3x3, stride 2 in frequency and time, padding 1) ->
    BatchNorm2d -> ReLU``; the mean and standard deviation over time of every (channel,
    frequency) feature, flattened; ``Linear`` to ``embed_dim``.

    Pooling over time only keeps *where* in frequency the energy lies (the spectral envelope an
    EQ changes: a mean over frequency too would leave only what a 3x3 stack's small frequency
    receptive field sees), and the standard deviation over time keeps how the level moves (what
    a compressor changes).

    BatchNorm (rather than a per-item GroupNorm) keeps the absolute level of the spectrum in the
    features, which a controller needs to set gains; in eval mode it is a per-channel affine map
    so items are independent of the batch and batch size 1 works. In training it pools its
    statistics over batch, frequency and time, so small batches (even 1) are fine.

    Args:
        sample_rate: Hz, of the audio the encoder is meant for (stored; the network itself
            works in samples and bins).
        n_fft: STFT frame length and FFT size (samples); the least input length accepted.
        hop_length: STFT hop (samples).
        channels: output channels of the convolution blocks, one block each.
        embed_dim: size of the embedding.
        compression: ``"power"``: ``(|X|^2 + eps)^0.15`` (DeepAFx-ST's ``|X|^0.3``); ``"log"``:
            ``log10(|X|^2 + eps)`` (in bels), where a gain or an EQ is an added constant per
            bin, which a controller learns to read back faster.
        level_bands: when above 0, :meth:`level_features` (the long-term spectrum in this many
            log-spaced bands, frame-level statistics, peak and RMS, all in dB) join the pooled
            CNN features before the projection. They hand the controller the absolute levels
            a gain or make-up setting must be read from, which the BatchNorm-ed CNN only
            carries implicitly. 0 (the default) is DeepAFx-ST's encoder.
    """

    def __init__(
        self,
        sample_rate: float,
        n_fft: int = 1024,
        hop_length: int = 256,
        channels: Sequence[int] = (16, 32, 64, 128),
        embed_dim: int = 128,
        compression: str = "power",
        level_bands: int = 0,
    ):
        super().__init__()
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
        self.compression = compression
        self.sample_rate = check_sample_rate(sample_rate)
        self.n_fft = check_integer(n_fft, "n_fft", 2)
        self.hop_length = check_integer(hop_length, "hop_length", 1)
        self.embed_dim = check_integer(embed_dim, "embed_dim", 1)
        widths = [check_integer(c, "channels", 1) for c in channels]
        if not widths:
            raise ValueError("channels must name at least one convolution block's width")
        blocks = []
        for c_in, c_out in zip([1, *widths[:-1]], widths):
            blocks += [
                # No bias: BatchNorm's shift follows.
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                # In place: BatchNorm's backward reads its input, not its output.
                nn.ReLU(inplace=True),
            ]
        self.cnn = nn.Sequential(*blocks)
        pooled_bins = self.n_bins
        for _ in widths:
            pooled_bins = (pooled_bins - 1) // 2 + 1  # a stride-2, padding-1, 3-tap conv
        self.pooled_bins = pooled_bins
        self.level_bands = check_integer(level_bands, "level_bands", 0)
        if self.level_bands:
            self.register_buffer("band_weights", self._band_weights(), persistent=False)
        n_level = self.level_bands + len(FRAME_LEVEL_QUANTILES) + 3 if self.level_bands else 0
        self.proj = nn.Linear(2 * widths[-1] * pooled_bins + n_level, self.embed_dim)

    def _band_weights(self) -> torch.Tensor:
        """``(level_bands, n_bins)`` rows averaging the STFT bins of each band.

        Bands are equal in log frequency from ``LEVEL_BAND_LOW_HZ`` to Nyquist, each holding
        the bins in ``[low, high)`` (the last one Nyquist too); a band narrower than one bin
        takes the bin nearest its geometric centre, so every row has weight.
        """
        bin_hz = torch.arange(self.n_bins, dtype=torch.float64) * self.sample_rate / self.n_fft
        edges = torch.logspace(
            math.log10(LEVEL_BAND_LOW_HZ),
            math.log10(self.sample_rate / 2),
            self.level_bands + 1,
            dtype=torch.float64,
        )
        edges[-1] = self.sample_rate / 2  # exactly, so the last band holds the Nyquist bin
        rows = []
        for k, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
            last = k == self.level_bands - 1
            inside = (bin_hz >= low) & ((bin_hz <= high) if last else (bin_hz < high))
            if not inside.any():  # narrower than a bin: the bin nearest the band's centre
                inside = torch.zeros_like(inside)
                inside[(bin_hz - (low * high).sqrt()).abs().argmin()] = True
            rows.append(inside.double() / inside.sum())
        return torch.stack(rows).float()

    @property
    def n_bins(self) -> int:
        """Frequency bins of the spectrogram: ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """The compressed magnitude the CNN reads.

        Args:
            x: ``(batch, 1, samples)`` audio, ``samples >= n_fft``.

        Returns:
            ``(batch, 1, n_fft // 2 + 1, frames)``: ``(|X|^2 + MAGNITUDE_EPS)^0.15``, or
            ``log10(|X|^2 + MAGNITUDE_EPS)`` with ``compression="log"``; ``frames = 1 +
            (samples - n_fft) // hop_length``.
        """
        return self._compress(self._power(x))

    def _compress(self, power: torch.Tensor) -> torch.Tensor:
        """Compressed magnitude (batch, 1, bins, frames) of |X|^2 (batch, bins, frames)."""
        if self.compression == "log":
            return torch.log10(power + MAGNITUDE_EPS).unsqueeze(1)
        return (power + MAGNITUDE_EPS).pow(MAGNITUDE_POWER / 2).unsqueeze(1)

    def _power(self, x: torch.Tensor) -> torch.Tensor:
        """``|X|^2``, ``(batch, n_bins, frames)``, of ``(batch, 1, samples)`` audio."""
        B, T = _check_mono(x, "x", self.n_fft)
        X = torch.stft(
            x.reshape(B, T),
            self.n_fft,
            self.hop_length,
            # Made per call in x's dtype: a stored float32 window would limit float64 accuracy.
            window=torch.hann_window(self.n_fft, dtype=x.dtype, device=x.device),
            center=False,
            return_complex=True,
        )
        # |X|^2 without the sqrt at 0; the same values as view_as_real(X).square().sum(-1)
        # (a sum of two terms), which reduces over a size-2 axis 4x slower.
        return X.real.square() + X.imag.square()

    def level_features(self, x: torch.Tensor, power: torch.Tensor | None = None) -> torch.Tensor:
        """Absolute-level summary of audio, in dB divided by ``LEVEL_SCALE_DB``.

        Per item, in order:

        * the long-term average spectrum: mean power spectral density (STFT power over time
          divided by the Hann window's energy, i.e. per-sample power per bin) averaged in
          each of ``level_bands`` bands (see :meth:`_band_weights`), in dB;
        * the level of each STFT frame (mean-square of the windowed samples, in dB) at the
          quantiles :data:`FRAME_LEVEL_QUANTILES`: the dynamics a compressor reshapes;
        * the RMS level, the peak level (dBFS) and their difference, the crest factor.

        Every dB value floors at ``10 log10(LEVEL_EPS) = -100 dB``, so silence is finite.

        Args:
            x: ``(batch, 1, samples)``, ``samples >= n_fft``.
            power: ``x``'s ``|X|^2`` (``(batch, bins, frames)``) when the caller has it already,
                so the STFT is not taken twice.

        Returns:
            ``(batch, level_bands + len(FRAME_LEVEL_QUANTILES) + 3)``.
        """
        if not self.level_bands:
            raise ValueError("level_features needs level_bands > 0")
        window_energy = self.n_fft * 3 / 8  # sum of a periodic Hann window's squares
        if power is None:
            power = self._power(x)
        power = power / (window_energy * self.n_fft)  # (B, bins, frames)
        spectrum = power.mean(dim=-1) @ self.band_weights.to(power.dtype).T  # (B, bands)
        # Parseval: a frame's bin powers sum (one-sided, bins 1..N/2-1 counted twice) to the
        # frame's windowed energy; the two-sided sum over n_fft bins is the same sum.
        two_sided = 2 * power.sum(dim=1) - power[:, 0] - power[:, -1]  # (B, frames)
        quantiles = torch.tensor(FRAME_LEVEL_QUANTILES, dtype=power.dtype, device=power.device)
        frame_levels = torch.quantile(two_sided, quantiles, dim=-1).T  # (B, quantiles)
        mean_square = x.square().mean(dim=(1, 2)).unsqueeze(1)
        peak_square = x.square().amax(dim=(1, 2)).unsqueeze(1)
        rms_db, peak_db = _db(mean_square), _db(peak_square)
        levels = torch.cat(
            [_db(spectrum), _db(frame_levels), rms_db, peak_db, peak_db - rms_db], dim=1
        )
        return levels / LEVEL_SCALE_DB

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed audio.

        Args:
            x: ``(batch, 1, samples)`` audio, ``samples >= n_fft``, finite.

        Returns:
            ``(batch, embed_dim)``.
        """
        power = self._power(x)
        return self.__dict__.get("_compiled_embed", self._embed)(power, x)

    def _embed(self, power: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The network behind the STFT: ``(batch, embed_dim)`` from ``x``'s ``|X|^2``."""
        features = self.cnn(self._compress(power))  # (B, channels[-1], F', frames')
        mean = features.mean(dim=-1)
        std = (features.var(dim=-1, unbiased=False) + STD_EPS).sqrt()
        pooled = torch.cat([mean, std], dim=1).flatten(1)
        if self.level_bands:
            pooled = torch.cat([pooled, self.level_features(x, power)], dim=1)
        return self.proj(pooled)

    def compile(self, *args, **kwargs) -> None:
        """``torch.compile`` the network behind the STFT (arguments as ``torch.compile``'s).

        Unlike ``nn.Module.compile`` the STFT front end stays eager: inductor generates no
        code for complex tensors, and the input checks read a value back, which would break
        the graph. The state dict is unchanged, and a pickled or deep-copied encoder runs eagerly
        (as after ``nn.Module.compile``). Compiled kernels fuse and reorder float arithmetic, so
        outputs differ from eager ones by float rounding.
        """
        # Static shapes unless asked otherwise: torch's default makes a dynamic (symbolic-shape)
        # graph on the second input shape, which failed in inductor here.
        kwargs.setdefault("dynamic", False)
        self._compiled_embed = torch.compile(self._embed, *args, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_compiled_embed", None)
        return state


class TCNEncoder(nn.Module):
    """Embed a waveform with strided, dilated residual convolutions and mean/std pooling.

    ``n_blocks`` :class:`diffx.nn.tcn.TCNBlock` (non-causal, centred padding): block ``i`` has
    dilation ``dilation_growth**i`` and stride ``stride``, so the time resolution halves (for
    ``stride=2``) at every block and the receptive field grows geometrically. The last block's
    features are pooled over time into their mean and standard deviation
    (``sqrt(var + STD_EPS)``), concatenated and projected by a ``Linear`` to ``embed_dim``.

    No normalization layers (the blocks' initialization keeps the signal's scale), so the
    embedding carries the input's level and an item's embedding never depends on the batch.

    Args:
        embed_dim: size of the embedding.
        n_blocks: residual blocks.
        channels: width of every block.
        kernel_size: taps of the dilated convolutions.
        dilation_growth: block ``i`` has dilation ``dilation_growth**i`` (in its input's
            samples).
        stride: downsampling factor of every block.
        min_samples: the least input length accepted (samples, default 1).
    """

    def __init__(
        self,
        embed_dim: int = 128,
        n_blocks: int = 4,
        channels: int = 32,
        kernel_size: int = 15,
        dilation_growth: int = 4,
        stride: int = 2,
        min_samples: int = 1,
    ):
        super().__init__()
        self.embed_dim = check_integer(embed_dim, "embed_dim", 1)
        self.n_blocks = check_integer(n_blocks, "n_blocks", 1)
        self.channels = check_integer(channels, "channels", 1)
        kernel_size = check_integer(kernel_size, "kernel_size", 1)
        dilation_growth = check_integer(dilation_growth, "dilation_growth", 1)
        self.stride = check_integer(stride, "stride", 1)
        self.min_samples = check_integer(min_samples, "min_samples", 1)
        self.blocks = nn.ModuleList(
            TCNBlock(
                1 if i == 0 else self.channels,
                self.channels,
                kernel_size,
                dilation=dilation_growth**i,
                stride=self.stride,
                causal=False,
            )
            for i in range(self.n_blocks)
        )
        self.proj = nn.Linear(2 * self.channels, self.embed_dim)

    @property
    def receptive_field(self) -> int:
        """Input samples that one output frame of the last block reads."""
        return 1 + sum(block.span * self.stride**i for i, block in enumerate(self.blocks))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, channels, ceil(samples / stride**n_blocks))`` features before pooling."""
        _check_mono(x, "x", self.min_samples)
        h = x
        for block in self.blocks:
            h = block(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed audio.

        Args:
            x: ``(batch, 1, samples)`` audio, ``samples >= min_samples``, finite.

        Returns:
            ``(batch, embed_dim)``.
        """
        h = self.features(x)
        mean = h.mean(dim=-1)
        std = (h.var(dim=-1, unbiased=False) + STD_EPS).sqrt()
        return self.proj(torch.cat([mean, std], dim=-1))


class Controller(nn.Module):
    """Map input and reference embeddings to an effect chain's normalized parameters.

    DeepAFx-ST's controller: ``concat(input_embedding, reference_embedding)`` -> ``n_layers``
    ``Linear`` layers (``hidden`` wide, LeakyReLU(0.01) between them) -> sigmoid.

    Args:
        embed_dim: size of each embedding.
        n_params: normalized parameters to produce (e.g. the chain's ``parameter_size()``).
        hidden: width of the hidden layers.
        n_layers: ``Linear`` layers in all (``n_layers - 1`` hidden ones; 1 is a linear map).
    """

    def __init__(self, embed_dim: int, n_params: int, hidden: int = 256, n_layers: int = 3):
        super().__init__()
        self.embed_dim = check_integer(embed_dim, "embed_dim", 1)
        self.n_params = check_integer(n_params, "n_params", 1)
        hidden = check_integer(hidden, "hidden", 1)
        n_layers = check_integer(n_layers, "n_layers", 1)
        widths = [2 * self.embed_dim] + [hidden] * (n_layers - 1) + [self.n_params]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            if i:
                layers.append(nn.LeakyReLU(0.01))
            layers.append(nn.Linear(a, b))
        self.mlp = nn.Sequential(*layers)

    def _check(self, e: torch.Tensor, name: str) -> None:
        if not isinstance(e, torch.Tensor) or not e.is_floating_point():
            raise ValueError(f"{name} must be a floating-point torch.Tensor")
        if e.dim() != 2 or e.shape[1] != self.embed_dim:
            raise ValueError(
                f"{name} must be shaped (batch, embed_dim={self.embed_dim}), "
                f"got shape {tuple(e.shape)}"
            )
        check_finite(e, name)

    def forward(
        self, input_embedding: torch.Tensor, reference_embedding: torch.Tensor
    ) -> torch.Tensor:
        """Predict parameters.

        Args:
            input_embedding: ``(batch, embed_dim)`` embedding of the audio to process.
            reference_embedding: ``(batch, embed_dim)`` embedding of the style reference.

        Returns:
            ``(batch, n_params)`` normalized parameters in (0, 1).
        """
        self._check(input_embedding, "input_embedding")
        self._check(reference_embedding, "reference_embedding")
        if input_embedding.shape[0] != reference_embedding.shape[0]:
            raise ValueError(
                f"input_embedding and reference_embedding must have the same batch size, got "
                f"{input_embedding.shape[0]} and {reference_embedding.shape[0]}"
            )
        return torch.sigmoid(self.mlp(torch.cat([input_embedding, reference_embedding], -1)))
