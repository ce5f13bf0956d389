"""Neural proxies: a TCN conditioned on an effect's parameters, trained to imitate the effect.

DeepAFx-ST (Steinmetz et al., JAES 2022) trains one proxy per effect, freezes it, and
back-propagates through it in place of an effect that has no gradient (a plug-in, a
pedalboard effect). Two ways to use a frozen proxy (:class:`ProxyChain`):

* ``"proxy"``: the proxy's audio is the output (DeepAFx-ST's "proxy0"); cheap, but the model
  hears the proxy's errors.
* ``"straight_through"``: the real effect's audio is the output and the proxy supplies only
  the gradient, ``y = real + (proxy - proxy.detach())`` (DeepAFx-ST's "proxy2").

A proxy file (``.pt``) holds the TCN's settings and weights, the imitated effect's parameter
names, units and ranges, and the sample rate; :func:`load_proxy` needs nothing else.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from diffx._validation import check_audio
from diffx.effects.base import EffectChain, ParamSpec, check_normalized
from diffx.nn.tcn import TCN

PROXY_MODES = ("proxy", "straight_through")
PROXY_FORMAT_VERSION = 1


class NeuralProxy(nn.Module):
    """A conditional TCN standing in for one effect.

    Args:
        param_specs: the imitated effect's :class:`ParamSpec` s (their count is the
            conditioning size; names and ranges travel with the proxy for display).
        sample_rate: Hz, the rate the proxy was trained at.
        n_blocks, channels, kernel_size, dilation_growth: the TCN (DeepAFx-ST: 4, 64, 13, 8).
        causal: causal convolutions (the effects imitated here are causal).
        effect_name: what the proxy imitates, for messages.

    Call as ``proxy(x, params)`` with ``x (batch, 1, samples)`` and normalized ``params
    (batch, n_params)``; returns ``(batch, 1, samples)``.
    """

    def __init__(
        self,
        param_specs: tuple[ParamSpec, ...] | list[ParamSpec],
        sample_rate: float,
        n_blocks: int = 4,
        channels: int = 64,
        kernel_size: int = 13,
        dilation_growth: int = 8,
        causal: bool = True,
        effect_name: str = "effect",
    ):
        super().__init__()
        if not param_specs:
            raise ValueError("a proxy needs the imitated effect's parameter specs (none given)")
        self.param_specs = tuple(param_specs)
        self.sample_rate = float(sample_rate)
        self.effect_name = effect_name
        self.config = dict(
            n_blocks=n_blocks,
            channels=channels,
            kernel_size=kernel_size,
            dilation_growth=dilation_growth,
            causal=causal,
        )
        self.tcn = TCN(in_channels=1, out_channels=1, cond_dim=len(self.param_specs), **self.config)

    @classmethod
    def for_effect(cls, effect, name: str | None = None, **tcn) -> NeuralProxy:
        """A proxy sized for ``effect`` (any module with ``param_specs`` and ``sample_rate``)."""
        return cls(effect.param_specs, effect.sample_rate,
                   effect_name=name or type(effect).__name__, **tcn)  # fmt: skip

    @property
    def param_names(self) -> list[str]:
        return [spec.name for spec in self.param_specs]

    def parameter_size(self) -> int:
        return len(self.param_specs)

    @property
    def receptive_field(self) -> int:
        return self.tcn.receptive_field

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        check_audio(x, "x")
        if x.shape[1] != 1:
            raise ValueError(
                f"a proxy processes mono audio (batch, 1, samples), got {tuple(x.shape)}"
            )
        if params.dim() != 2 or params.shape != (x.shape[0], self.parameter_size()):
            raise ValueError(
                f"proxy of {self.effect_name}: params must be shaped ({x.shape[0]}, "
                f"{self.parameter_size()}), got {tuple(params.shape)}"
            )
        check_normalized(params, self.param_names, f"proxy of {self.effect_name}")
        return self.tcn(x, params.to(x.dtype))

    def state(self) -> dict:
        """Everything :func:`load_proxy` needs, as plain Python and tensors."""
        return {
            "format": "diffx-proxy",
            "version": PROXY_FORMAT_VERSION,
            "effect_name": self.effect_name,
            "sample_rate": self.sample_rate,
            "param_specs": [asdict(spec) for spec in self.param_specs],
            "tcn": dict(self.config),
            "state_dict": {k: v.detach().cpu().float() for k, v in self.state_dict().items()},
        }


def save_proxy(proxy: NeuralProxy, path: str | Path) -> Path:
    """Write ``proxy`` to ``path`` (``.pt``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(proxy.state(), path)
    return path


def load_proxy(path: str | Path) -> NeuralProxy:
    """Read a proxy written by :func:`save_proxy` (float32, eval mode).

    Raises:
        ValueError: the file is missing, unreadable or not a diffx proxy; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"proxy file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "not a proxy"
        raise ValueError(f"cannot read proxy file {str(path)!r}: {error}") from error
    if not isinstance(state, dict) or state.get("format") != "diffx-proxy":
        raise ValueError(f"{str(path)!r} is not a diffx proxy file")
    if state.get("version", 0) > PROXY_FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has proxy format {state['version']}; this diffx reads up to "
            f"{PROXY_FORMAT_VERSION}"
        )
    specs = [ParamSpec(**spec) for spec in state["param_specs"]]
    proxy = NeuralProxy(
        specs, state["sample_rate"], effect_name=state["effect_name"], **state["tcn"]
    )
    proxy.load_state_dict(state["state_dict"])
    return proxy.eval()


class ProxyChain(nn.Module):
    """An :class:`EffectChain` with some effects replaced by frozen neural proxies.

    Args:
        chain: the real chain (its parameter layout is kept).
        proxies: one entry per effect of ``chain``: a :class:`NeuralProxy`, a path to a proxy
            file, or ``None`` to keep that effect as it is (it must then be differentiable).
        mode: ``"proxy"`` or ``"straight_through"`` (module docs).

    Raises:
        ValueError: wrong number of entries, or a proxy whose parameters or sample rate do not
            match its effect's (names both).
    """

    def __init__(self, chain: EffectChain, proxies, mode: str = "proxy"):
        super().__init__()
        if mode not in PROXY_MODES:
            raise ValueError(f"proxy mode must be one of {PROXY_MODES}, got {mode!r}")
        if len(proxies) != len(chain.effects):
            raise ValueError(
                f"give one proxy entry per effect of the chain ({len(chain.effects)}: "
                f"{chain.names}), got {len(proxies)}"
            )
        loaded = []
        for name, effect, proxy in zip(chain.names, chain.effects, proxies):
            if isinstance(proxy, (str, Path)):
                proxy = load_proxy(proxy)
            if proxy is not None:
                if proxy.param_names != effect.param_names:
                    raise ValueError(
                        f"proxy for {name!r} imitates parameters {proxy.param_names}, but the "
                        f"effect has {effect.param_names}"
                    )
                if proxy.sample_rate != effect.sample_rate:
                    raise ValueError(
                        f"proxy for {name!r} was trained at {proxy.sample_rate:g} Hz, the "
                        f"effect runs at {effect.sample_rate:g} Hz"
                    )
                proxy.requires_grad_(False).eval()
            loaded.append(proxy)
        self.chain = chain
        self.proxies = nn.ModuleList([p if p is not None else nn.Identity() for p in loaded])
        self.has_proxy = [p is not None for p in loaded]
        self.mode = mode

    def train(self, mode: bool = True):
        super().train(mode)
        for proxy, has in zip(self.proxies, self.has_proxy):
            if has:
                proxy.eval()  # frozen: no batch statistics, no dropout
        return self

    # the chain's parameter layout
    param_names = property(lambda self: self.chain.param_names)
    param_specs = property(lambda self: self.chain.param_specs)
    sample_rate = property(lambda self: self.chain.sample_rate)

    def parameter_size(self) -> int:
        return self.chain.parameter_size()

    def denormalize(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.chain.denormalize(params)

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        for effect, proxy, has, block in zip(
            self.chain.effects, self.proxies, self.has_proxy, self.chain.split(params)
        ):
            if not has:
                x = effect(x, block)
            elif self.mode == "proxy":
                x = proxy(x, block)
            else:
                with torch.no_grad():
                    real = effect(x.detach(), block.detach())
                imitation = proxy(x, block)
                x = real + (imitation - imitation.detach())
        return x
