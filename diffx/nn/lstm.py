"""Recurrent amp model: one recurrent layer, a linear output layer and an input-to-output skip.

This is the architecture of Wright, Damskägg and Välimäki, "Real-time black-box modelling with
recurrent neural networks" (DAFx 2019), trained by GuitarML's Automated-GuitarAmpModelling
(class ``SimpleRNN`` of CoreAudioML) and run by the Proteus plug-in; Carson et al. (DAFx 2025)
fine-tune it for anti-aliasing. The usual size is an LSTM with 40 hidden units. Per sample::

    h[n], c[n] = LSTM(u[n], h[n-1], c[n-1])
    y[n] = W h[n] + b + x[n]          # the skip adds the audio input (channel 0)

where ``u[n]`` is the input vector: the audio sample alone (``input_size=1``) or the audio sample
followed by knob values (``input_size`` 2 or 3, GuitarML's conditioned models). The sub-module
names ``rec`` and ``lin`` match GuitarML's, so its JSON ``state_dict`` maps onto
:class:`LSTMAmp` without renaming (see :mod:`diffx.io.guitarml`).

Streaming and truncated back-propagation through time (TBPTT): with ``stateful=True`` the model
keeps its recurrent state between calls, so feeding a signal in consecutive blocks gives the
same output as feeding it whole. A training loop in the manner of Wright et al. uses it as::

    model.stateful = True
    model.reset_state()                      # start each batch of segments from silence
    with torch.no_grad():
        model(x[..., :warmup])               # warm-up (e.g. 1000 samples): sets the state,
                                             # no loss, no gradient
    for start in range(warmup, x.shape[-1], frame):   # frames of e.g. 2048 samples
        y = model(x[..., start:start + frame])
        loss = loss_fn(y, target[..., start:start + frame])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.detach_state()                 # keep the state's value, cut its graph so the
                                             # next frame's backward stops here
"""

from __future__ import annotations

import torch
from torch import nn

from diffx._validation import check_audio, check_finite, check_integer, check_sample_rate

UNIT_TYPES = ("LSTM", "GRU", "RNN")
"""Recurrent unit types, named as GuitarML's ``unit_type`` field names them (torch class names)."""

_State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class LSTMAmp(nn.Module):
    """Recurrent neural amp model (Wright et al., DAFx 2019; GuitarML ``SimpleRNN``).

    Args:
        hidden_size: number of recurrent units (40 in Carson et al.; GuitarML uses 20 to 40).
        num_layers: number of stacked recurrent layers (GuitarML's models and Proteus use 1).
        input_size: input channels: 1 for a plain amp model; 2 or 3 for a knob-conditioned
            model whose channels 1.. hold the knob values (normalised as the model was trained,
            usually to [0, 1]).
        skip: add the audio input (channel 0) to the output, so the network learns the
            difference between the output and the input.
        unit_type: ``"LSTM"`` (default), ``"GRU"`` or ``"RNN"`` (Elman, tanh).
        bias: give the output layer a bias (GuitarML's ``bias_fl``); the recurrent layer always
            has biases, as in GuitarML.
        stateful: keep the recurrent state between calls (streaming, TBPTT). When ``False``
            each call starts from a zero state and leaves ``state`` as it was.
        sample_rate: the sample rate in Hz the model was trained at, kept for the user (the model
            itself does not use it); ``None`` when unknown.

    Attributes:
        rec: the ``torch.nn`` recurrent layer (``batch_first=True``).
        lin: the ``torch.nn.Linear(hidden_size, 1)`` output layer.
        state: the recurrent state kept between calls when ``stateful`` (``None`` = zeros):
            ``(h, c)`` for an LSTM, ``h`` otherwise, each ``(num_layers, batch, hidden_size)``.
    """

    def __init__(
        self,
        hidden_size: int = 40,
        num_layers: int = 1,
        input_size: int = 1,
        skip: bool = True,
        unit_type: str = "LSTM",
        bias: bool = True,
        stateful: bool = False,
        sample_rate: float | None = None,
    ) -> None:
        super().__init__()
        hidden_size = check_integer(hidden_size, "hidden_size", minimum=1)
        num_layers = check_integer(num_layers, "num_layers", minimum=1)
        input_size = check_integer(input_size, "input_size", minimum=1)
        if not isinstance(unit_type, str) or unit_type.upper() not in UNIT_TYPES:
            raise ValueError(f"unit_type must be one of {UNIT_TYPES}, got {unit_type!r}")
        self.unit_type = unit_type.upper()
        rnn_class = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}[self.unit_type]
        self.rec = rnn_class(input_size, hidden_size, num_layers, batch_first=True)
        self.lin = nn.Linear(hidden_size, 1, bias=bool(bias))
        self.skip = bool(skip)
        self.stateful = bool(stateful)
        self.sample_rate = None if sample_rate is None else check_sample_rate(sample_rate)
        self.state: _State | None = None

    @property
    def input_size(self) -> int:
        """Number of input channels: the audio plus ``input_size - 1`` knobs."""
        return self.rec.input_size

    @property
    def hidden_size(self) -> int:
        return self.rec.hidden_size

    @property
    def num_layers(self) -> int:
        return self.rec.num_layers

    @property
    def bias(self) -> bool:
        return self.lin.bias is not None

    def reset_state(self) -> None:
        """Forget the recurrent state: the next stateful call starts from zeros."""
        self.state = None

    def detach_state(self) -> None:
        """Keep the state's value but cut it from the autograd graph (the TBPTT frame boundary)."""
        if self.state is None:
            return
        if isinstance(self.state, tuple):
            self.state = tuple(s.detach() for s in self.state)
        else:
            self.state = self.state.detach()

    def _inputs(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Check ``x`` (and ``cond``) and return the full input ``(batch, input_size, samples)``."""
        check_audio(x, "x")
        if x.dim() != 3:
            raise ValueError(f"x must be shaped (batch, channels, samples), got {tuple(x.shape)}")
        B, C, T = x.shape  # batch, channels, samples
        if cond is None:
            if C != self.input_size:
                raise ValueError(
                    f"x must have {self.input_size} channel(s) (audio"
                    + (f" + {self.input_size - 1} knob(s)" if self.input_size > 1 else "")
                    + f"), got {C}"
                )
            return x
        if self.input_size == 1:
            raise ValueError("cond was given but this model has no knob inputs (input_size=1)")
        if C != 1:
            raise ValueError(f"x must have 1 channel (audio) when cond is given, got {C}")
        n_knobs = self.input_size - 1
        if not isinstance(cond, torch.Tensor) or not cond.is_floating_point():
            raise ValueError("cond must be a floating-point torch.Tensor")
        check_finite(cond, "cond")
        cond = cond.to(dtype=x.dtype, device=x.device)
        if cond.dim() == 2 and cond.shape in ((B, n_knobs), (1, n_knobs)):
            cond = cond.unsqueeze(-1)  # constant knobs: one value per item, held for all samples
        if (
            cond.dim() != 3
            or cond.shape[0] not in (1, B)
            or cond.shape[1:]
            not in (
                (n_knobs, 1),
                (n_knobs, T),
            )
        ):
            raise ValueError(
                f"cond must be shaped (batch, {n_knobs}) or (batch, {n_knobs}, samples) with "
                f"batch {B} (or 1) and samples {T}, got {tuple(cond.shape)}"
            )
        return torch.cat([x, cond.expand(B, n_knobs, T)], dim=1)

    def _check_state(self, batch: int) -> None:
        h = self.state[0] if isinstance(self.state, tuple) else self.state
        if h.shape[1] != batch:
            raise ValueError(
                f"x has batch size {batch} but the kept state has batch size {h.shape[1]}; "
                "call reset_state() before changing the batch size"
            )

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Run the model.

        Args:
            x: ``(batch, input_size, samples)`` audio in channel 0 and knob values in channels
                1.., or ``(batch, 1, samples)`` audio when ``cond`` is given.
            cond: knob values for a conditioned model, ``(batch, input_size - 1)`` held
                constant or ``(batch, input_size - 1, samples)`` per sample; ``batch`` may be 1
                to share the knobs across the batch.

        Returns:
            ``(batch, 1, samples)`` output audio, same dtype as ``x``.
        """
        u = self._inputs(x, cond)
        state = None
        if self.stateful and self.state is not None:
            self._check_state(u.shape[0])
            state = self.state
        # nn.LSTM with batch_first wants (batch, samples, features); audio here is channels-first.
        hidden, new_state = self.rec(u.transpose(1, 2), state)
        if self.stateful:
            self.state = new_state
        y = self.lin(hidden).transpose(1, 2)
        if self.skip:
            y = y + x[:, :1]
        return y

    def extra_repr(self) -> str:
        return (
            f"skip={self.skip}, stateful={self.stateful}, sample_rate={self.sample_rate}, "
            f"unit_type={self.unit_type!r}"
        )
