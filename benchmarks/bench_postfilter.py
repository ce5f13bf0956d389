"""Benchmark diffx's GAN post-filter networks and GV post-filter against NNSVS's, on CPU.

Usage::

    python benchmarks/bench_postfilter.py [--repeats N] [--d-repeats M] [--gv-repeats K]
                                          [--threads T] [--batch B] [--frames F]
                                          [--no-memory] [--out benchmarks/RESULTS.md]

Method:

- Settings: NNSVS's ``mgc`` post-filter recipe (``postfilter_mgc.yaml``, ``train/mgc.yaml``):
  generator ``Conv2dPostFilter(in_dim=58, channels=64, kernel_size=(5, 5),
  noise_type="frame_wise", smoothing 100 frames)`` on ``mgc[2:]``; discriminator ``Conv2dD(
  channels=32, kernel_size=(7, 3), padding=(0, 0))``; LSGAN, adversarial weight 1, feature
  matching weight 10, MSE weight 0, Adam (1e-4, betas 0.5/0.9), gradient norm clipped to 1,
  V/UV mask. Batch ``B`` (8) segments of ``F`` (256) frames, float32, 67-dim features
  (mgc 60, lf0 1, vuv 1, bap 5) where a whole vector is needed.
- Peer: ``nnsvs/postfilters.py``, ``nnsvs/discriminators.py`` and the ``train_step`` function
  of ``nnsvs/bin/train_postfilter.py`` of github.com/nnsvs/nnsvs, read at run time from a local
  git mirror or checkout (``--peer-repo``, or ``$DIFFX_NNSVS_REPO``) and executed in module
  namespaces; nothing of NNSVS is stored in diffx. The package itself imports hydra,
  nnmnkwii, pyworld, ...; instead, ``nnsvs.base`` is executed whole, and the few helpers the
  three files use (``init_weights``, ``make_non_pad_mask``, ``split_streams``,
  ``select_streams``) are cut out of ``nnsvs/util.py`` and ``nnsvs/multistream.py`` by name
  with ``ast`` and executed alone. ``train_step``'s per-step distortion metrics
  (``compute_distortions``: MCD etc. on de-normalized features) are replaced by an empty
  dict. Without the mirror the peer is skipped with a message.
- Correctness before timing: NNSVS's generator weights are copied into diffx's (same layer
  shapes: ``conv1..conv4``, ``fc`` -> ``noise_map``) and both are run with the same seed of
  torch's global generator (both draw one standard normal per frame, in the same order): the
  outputs and every parameter gradient must agree to 1e-5 (the channels-last path: to 1e-4 x
  the largest output or gradient), else the script stops. Likewise NNSVS's discriminator at
  the recipe's padding (0, 0) against diffx's with copied weights, and the parameters after
  three whole training steps (NNSVS's weights copied into diffx's task, the same seeds; the
  channels-last path's not asserted). The inference-time noise smoothing is compared too (not
  asserted: padding differs).
- Cases: (1) generator inference (eval mode, noise smoothed over 100 frames, no grad) and
  forward + backward of ``mean(y^2)`` w.r.t. all parameters (training mode); (2) discriminator
  forward + backward of ``mean(score^2)`` w.r.t. the input and all parameters; (3) one GAN
  training step (discriminator update, then generator update) by each library's own training
  code: diffx ``GANPostFilter.training_step`` (Lightning's optimizer access,
  ``manual_backward`` and ``clip_gradients`` replaced by plain torch calls, logging off) and
  NNSVS's ``train_step``. Cases 1-3 also time diffx's channels-last path (``diffx,
  channels_last``: the networks ``.to(memory_format=torch.channels_last)``, the step
  ``GANPostFilter(channels_last=True)``), whose float32 rounding differs (the agreement checks
  assert it against NNSVS to ``CL_TOLERANCE`` x the output's max abs value); (4) GV variance
  scaling of 100 utterances of 1000 x 60 frames,
  offset 2: diffx ``variance_scaling`` (batched tensor, and one call per utterance) against
  NNSVS's NumPy ``variance_scaling`` (one call per utterance), all frames and voiced frames
  only (``note_frame_indices`` / ``frame_mask``).
- Times: ``torch.set_num_threads(T)`` (2); one warm-up call per implementation, then N calls
  of each, interleaved (diffx, peer, diffx, ...) so that a changing load from other processes
  hits both alike; the median is reported. ``vs diffx`` = the row's time / diffx's (default
  path) time (for the peer: > 1, diffx is faster); ``nnsvs / this`` = the peer's time / the
  row's.
- Peak memory of the training step (unless ``--no-memory``): a fresh subprocess per row;
  after a warm-up step at batch 1 (which creates Adam's state), the kernel's peak resident-set
  counter is reset (``echo 5 > /proc/self/clear_refs``) and the current RSS read; the peak
  (``VmHWM``) during one step at the benchmark's size minus that RSS is reported.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402
from report import fmt_ms, ratio  # noqa: E402

from diffx.functional import moving_average, variance_scaling  # noqa: E402
from diffx.nn import Conv2dDiscriminator, Conv2dPostFilter  # noqa: E402
from diffx.tasks import GANPostFilter  # noqa: E402

STREAMS = {"mgc": 60, "lf0": 1, "vuv": 1, "bap": 5}  # NNSVS's recipe (WORLD, 48 kHz)
STREAM_SIZES = list(STREAMS.values())
MGC_OFFSET = 2
IN_DIM = STREAMS["mgc"] - MGC_OFFSET  # 58
VUV_INDEX = STREAMS["mgc"] + STREAMS["lf0"]  # 61
G_CHANNELS, G_KERNEL, NOISE_TYPE, SMOOTHING = 64, (5, 5), "frame_wise", 100
D_CHANNELS, D_KERNEL, D_PADDING = 32, (7, 3), (0, 0)
LR, BETAS, CLIP_NORM = 1e-4, (0.5, 0.9), 1.0
ADV_WEIGHT, FM_WEIGHT, MSE_WEIGHT = 1.0, 10.0, 0.0
GV_UTTS, GV_FRAMES, GV_DIMS, GV_OFFSET = 100, 1000, 60, 2
TOLERANCE = 1e-5
DEFAULT_REPO = "/work/.mirror/nnsvs+nnsvs/repo"
PEER = "nnsvs"
PEER_D_SAME = "nnsvs, padding (3, 1)"
DIFFX_D_SAME = "diffx, padding (3, 1)"
DIFFX_CL = "diffx, channels_last"
CL_TOLERANCE = 1e-4  # channels-last vs NNSVS: max abs diff / max abs output (or gradient)
STEP_CHECKS = 3  # training steps compared with NNSVS's weights copied in


# --------------------------------------------------------------------------------------------
# The peer, executed from the mirror


def _git_text(repo: str, path: str) -> str:
    """A file of the peer: from a work tree when there is one, else ``git show HEAD:path``."""
    local = os.path.join(repo, path)
    if os.path.isfile(local):
        with open(local) as f:
            return f.read()
    if not os.path.isdir(repo):
        raise FileNotFoundError(f"no NNSVS mirror at {repo}")
    return subprocess.run(
        ["git", "-C", repo, "show", f"HEAD:{path}"], check=True, capture_output=True, text=True
    ).stdout


def _functions(source: str, names: tuple[str, ...]) -> str:
    """The source of the top-level functions ``names`` of ``source``, in file order."""
    tree = ast.parse(source)
    found = [
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names
    ]  # fmt: skip
    missing = set(names) - {n.name for n in found}
    if missing:
        raise AttributeError(f"functions {sorted(missing)} not found")
    return "\n\n".join(ast.get_source_segment(source, n) for n in found)


def _module(name: str, source: str, origin: str, **namespace) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(namespace)
    exec(compile(source, origin, "exec"), module.__dict__)
    return module


def _no_autocast(enabled: bool = True):
    if enabled:
        raise RuntimeError("mixed precision is not benchmarked")
    return contextlib.nullcontext()


def load_peer(repo: str) -> types.SimpleNamespace:
    """NNSVS's post-filter, discriminator and training step, executed from ``repo``."""
    nn, F = torch.nn, torch.nn.functional
    util_src = _git_text(repo, "nnsvs/util.py")
    multistream_src = _git_text(repo, "nnsvs/multistream.py")
    helpers = {
        "nnsvs.base": _module("nnsvs.base", _git_text(repo, "nnsvs/base.py"), "nnsvs/base.py"),
        "nnsvs.util": _module(
            "nnsvs.util",
            _functions(util_src, ("init_weights", "make_pad_mask", "make_non_pad_mask")),
            "nnsvs/util.py", nn=nn, torch=torch, np=np,
        ),
        "nnsvs.multistream": _module(
            "nnsvs.multistream",
            _functions(multistream_src, ("select_streams", "split_streams")),
            "nnsvs/multistream.py", torch=torch, np=np,
        ),
    }  # fmt: skip
    package = types.ModuleType("nnsvs")
    package.__path__ = []
    stubs = {"nnsvs": package, **helpers}
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)  # only while the peer's files run their imports
    try:
        postfilters = _module(
            "nnsvs.postfilters", _git_text(repo, "nnsvs/postfilters.py"), "nnsvs/postfilters.py"
        )
        discriminators = _module(
            "nnsvs.discriminators",
            _git_text(repo, "nnsvs/discriminators.py"),
            "nnsvs/discriminators.py",
        )
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    train = _module(
        "nnsvs.bin.train_postfilter",
        _functions(_git_text(repo, "nnsvs/bin/train_postfilter.py"), ("train_step",)),
        "nnsvs/bin/train_postfilter.py",
        np=np, torch=torch, nn=nn, F=F, autocast=_no_autocast,
        select_streams=helpers["nnsvs.multistream"].select_streams,
        make_non_pad_mask=helpers["nnsvs.util"].make_non_pad_mask,
        compute_distortions=lambda *args, **kwargs: {},
    )  # fmt: skip
    commit = subprocess.run(
        ["git", "-C", repo, "log", "-1", "--format=%h (%cs)"], capture_output=True, text=True
    ).stdout.strip()
    return types.SimpleNamespace(
        postfilters=postfilters,
        discriminators=discriminators,
        train_step=train.train_step,
        commit=commit or "?",
    )


# --------------------------------------------------------------------------------------------
# Networks and inputs


def _memory_format(module: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    return module.to(memory_format=torch.channels_last) if channels_last else module


def diffx_generator(seed: int = 0, channels_last: bool = False) -> Conv2dPostFilter:
    torch.manual_seed(seed)
    net = Conv2dPostFilter(IN_DIM, G_CHANNELS, G_KERNEL, NOISE_TYPE, 1.0, SMOOTHING)
    return _memory_format(net, channels_last)


def peer_generator(peer, seed: int = 0):
    torch.manual_seed(seed)
    return peer.postfilters.Conv2dPostFilter(
        in_dim=IN_DIM, channels=G_CHANNELS, kernel_size=G_KERNEL, init_type="kaiming_normal",
        noise_scale=1.0, noise_type=NOISE_TYPE, smoothing_width=SMOOTHING,
    )  # fmt: skip


def diffx_discriminator(
    seed: int = 0, padding=D_PADDING, channels_last: bool = False
) -> Conv2dDiscriminator:
    torch.manual_seed(seed)
    return _memory_format(Conv2dDiscriminator(D_CHANNELS, D_KERNEL, padding), channels_last)


def peer_discriminator(peer, padding=D_PADDING, seed: int = 0):
    torch.manual_seed(seed)
    return peer.discriminators.Conv2dD(
        in_dim=None, channels=D_CHANNELS, kernel_size=D_KERNEL, padding=padding,
        last_sigmoid=False, init_type="kaiming_normal", padding_mode="zeros",
    )  # fmt: skip


def generator_state_to_diffx(state: dict) -> dict:
    """NNSVS ``Conv2dPostFilter`` state -> diffx's names (``convN.0.*`` -> ``convN.*``,
    ``fc.*`` -> ``noise_map.*``)."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^(conv[123])\.0\.", r"\1.", key)
        key = re.sub(r"^fc\.", "noise_map.", key)
        out[key] = value
    return out


def discriminator_state_to_diffx(state: dict) -> dict:
    """NNSVS ``Conv2dD`` state -> diffx's (``convs.i`` -> ``layers.i``, ``last_conv`` ->
    ``score``)."""
    return {
        re.sub(r"^last_conv\.", "score.", re.sub(r"^convs\.", "layers.", k)): v
        for k, v in state.items()
    }


def make_features(batch: int, frames: int, seed: int = 0):
    """Normalized ``(batch, frames, 67)`` natural and predicted (over-smoothed) features with
    a 0/1 V/UV stream (about 2/3 voiced, in runs)."""
    g = torch.Generator().manual_seed(seed)
    dims = sum(STREAM_SIZES)
    noise = torch.randn(batch, dims, frames, generator=g)
    natural = moving_average(noise, 5)
    natural = (natural - natural.mean(-1, keepdim=True)) / natural.std(-1, keepdim=True)
    predicted = 0.6 * moving_average(natural, 15)
    t = torch.arange(frames, dtype=torch.float32)
    phase = 6.3 * torch.rand(batch, 1, generator=g)
    vuv = (torch.sin(2 * torch.pi * t / 80 + phase) > -0.5).float()
    natural = natural.transpose(1, 2).contiguous()
    predicted = predicted.transpose(1, 2).contiguous()
    natural[..., VUV_INDEX] = vuv
    predicted[..., VUV_INDEX] = vuv
    return natural, predicted


def mgc_input(features: torch.Tensor) -> torch.Tensor:
    return features[..., MGC_OFFSET : STREAMS["mgc"]].contiguous()


# --------------------------------------------------------------------------------------------
# Training steps, each library's own code


class BareGANPostFilter(GANPostFilter):
    """``GANPostFilter.training_step`` outside a Lightning ``Trainer``: the optimizers of
    ``configure_optimizers`` are held here, ``manual_backward`` is ``loss.backward()``,
    ``clip_gradients`` torch's ``clip_grad_norm_``, logging is off."""

    def optimizers(self, use_pl_optimizer: bool = True):
        return self._bench_optimizers

    def manual_backward(self, loss, *args, **kwargs) -> None:
        loss.backward()

    def clip_gradients(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def log(self, *args, **kwargs) -> None:
        pass

    def log_dict(self, *args, **kwargs) -> None:
        pass


def diffx_stepper(seed: int = 0, channels_last: bool = False):
    torch.manual_seed(seed)
    task = BareGANPostFilter(
        streams=STREAMS, train_streams=("mgc",), adv_weight=ADV_WEIGHT, fm_weight=FM_WEIGHT,
        mse_weight=MSE_WEIGHT, learning_rate=LR, betas=BETAS, clip_norm=CLIP_NORM,
        vuv_mask=True, channels_last=channels_last,
    )  # fmt: skip
    task._bench_optimizers = task.configure_optimizers()[0]
    task.train()

    def step(natural, predicted):
        mask = torch.ones(natural.shape[:2], dtype=torch.bool)
        task.training_step({"natural": natural, "predicted": predicted, "mask": mask}, 0)

    step.task = task
    params = sum(p.numel() for p in task.parameters())
    return step, params


def peer_stepper(peer, seed: int = 0):
    torch.manual_seed(seed)
    netG = peer.postfilters.MultistreamPostFilter(
        mgc_postfilter=peer_generator(peer, seed), bap_postfilter=None, lf0_postfilter=None,
        stream_sizes=STREAM_SIZES, mgc_offset=MGC_OFFSET, bap_offset=0,
    )  # fmt: skip
    netD = peer_discriminator(peer, D_PADDING, seed)
    optG = torch.optim.Adam(netG.parameters(), lr=LR, betas=BETAS, weight_decay=0.0)
    optD = torch.optim.Adam(netD.parameters(), lr=LR, betas=BETAS, weight_decay=0.0)
    model_config = types.SimpleNamespace(stream_sizes=STREAM_SIZES)
    optim_config = types.SimpleNamespace(
        netG=types.SimpleNamespace(clip_norm=CLIP_NORM),
        netD=types.SimpleNamespace(clip_norm=CLIP_NORM),
    )

    def step(natural, predicted):
        lengths = torch.full((natural.shape[0],), natural.shape[1], dtype=torch.long)
        peer.train_step(
            model_config, optim_config, netG, optG, netD, optD, None, True, predicted,
            natural, lengths, None, mse_weight=MSE_WEIGHT, adv_weight=ADV_WEIGHT,
            adv_streams=[True, False, False, False], fm_weight=FM_WEIGHT,
            mask_nth_mgc_for_adv_loss=MGC_OFFSET, gan_type="lsgan", vuv_mask=True,
        )  # fmt: skip

    step.nets = (netG.mgc_postfilter, netD)
    params = sum(p.numel() for m in (netG, netD) for p in m.parameters())
    return step, params


def steppers(peer) -> dict:
    out = {"diffx": diffx_stepper(), DIFFX_CL: diffx_stepper(channels_last=True)}
    if peer is not None:
        out[PEER] = peer_stepper(peer)
    return out


# --------------------------------------------------------------------------------------------
# Timed calls


def generator_calls(peer, x):
    """``{(case, lib): fn}`` for the generator."""
    nets = {"diffx": diffx_generator(), DIFFX_CL: diffx_generator(channels_last=True)}
    if peer is not None:
        nets[PEER] = peer_generator(peer)
    calls = {}
    for lib, net in nets.items():

        def infer(net=net, lib=lib):
            net.eval()
            with torch.no_grad():
                net(x) if lib.startswith("diffx") else net.inference(x)

        def train(net=net):
            net.train()
            net.zero_grad(set_to_none=True)
            net(x).square().mean().backward()

        calls[("G inference", lib)] = infer
        calls[("G fwd+bwd", lib)] = train
    return calls, {lib: sum(p.numel() for p in n.parameters()) for lib, n in nets.items()}


def discriminator_calls(peer, x):
    nets = {"diffx": diffx_discriminator(), DIFFX_CL: diffx_discriminator(channels_last=True)}
    if peer is not None:
        nets[PEER] = peer_discriminator(peer, D_PADDING)
    nets[DIFFX_D_SAME] = diffx_discriminator(padding=None)
    if peer is not None:
        nets[PEER_D_SAME] = peer_discriminator(peer, None)
    calls, shapes = {}, {}
    for lib, net in nets.items():

        def run(net=net, lib=lib, backward=True):
            net.zero_grad(set_to_none=True)
            xi = x.detach().requires_grad_(backward)
            with torch.set_grad_enabled(backward):
                out = net(xi)
                maps = out if lib.startswith("diffx") else out[-1]  # NNSVS: list of scales
                if backward:
                    maps[-1].square().mean().backward()
            return maps

        calls[("D fwd+bwd", lib)] = run
        shapes[lib] = " -> ".join(
            "x".join(str(s) for s in m.shape[-2:]) for m in run(backward=False)
        )
    params = {lib: sum(p.numel() for p in n.parameters()) for lib, n in nets.items()}
    return calls, shapes, params


def gv_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    scale = np.linspace(2.0, 0.2, GV_DIMS)
    feats = rng.standard_normal((GV_UTTS, GV_FRAMES, GV_DIMS)).cumsum(1) * 0.05
    feats = (feats * scale + rng.standard_normal(GV_DIMS)).astype(np.float32)
    gv = (1.5 * feats.var(1).mean(0)).astype(np.float32)
    t = np.arange(GV_FRAMES)
    masks = np.sin(2 * np.pi * t / 120 + rng.uniform(0, 6.3, (GV_UTTS, 1))) > -0.5
    return feats, gv, masks


def gv_calls(peer, feats, gv, masks):
    utts = [np.ascontiguousarray(u) for u in feats]
    indices = [np.nonzero(m)[0] for m in masks]
    batch, gv_t, mask_t = torch.from_numpy(feats), torch.from_numpy(gv), torch.from_numpy(masks)
    rows = list(zip(batch, mask_t))
    calls = {
        ("GV all frames", "diffx"): lambda: variance_scaling(batch, gv_t, 1.0, GV_OFFSET),
        ("GV all frames", "diffx, per utterance"): lambda: [
            variance_scaling(u, gv_t, 1.0, GV_OFFSET) for u, _ in rows
        ],
        ("GV voiced frames", "diffx"): lambda: variance_scaling(
            batch, gv_t, 1.0, GV_OFFSET, frame_mask=mask_t
        ),
        ("GV voiced frames", "diffx, per utterance"): lambda: [
            variance_scaling(u, gv_t, 1.0, GV_OFFSET, frame_mask=m) for u, m in rows
        ],
    }
    if peer is not None:
        vs = peer.postfilters.variance_scaling
        calls[("GV all frames", PEER)] = lambda: [vs(gv, u, offset=GV_OFFSET) for u in utts]
        calls[("GV voiced frames", PEER)] = lambda: [
            vs(gv, u, offset=GV_OFFSET, note_frame_indices=i) for u, i in zip(utts, indices)
        ]
    return calls


def time_interleaved(calls: dict, repeats: int) -> dict:
    """Median ms of each call: one warm-up each, then ``repeats`` rounds over all of them."""
    for fn in calls.values():
        fn()
    times = {key: [] for key in calls}
    for _ in range(repeats):
        for key, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    gc.collect()
    return {key: statistics.median(t) * 1e3 for key, t in times.items()}


# --------------------------------------------------------------------------------------------
# Correctness


def check_agreement(peer, x, natural, predicted) -> list[dict]:
    """Copy NNSVS's weights into diffx's networks and compare; stops on a mismatch."""
    rows = []

    def add(check, err, scale, asserted, note="", relative=False):
        """``relative``: asserted <= CL_TOLERANCE x scale (the channels-last path's float32
        rounding differs), else <= TOLERANCE."""
        tolerance = CL_TOLERANCE * scale if relative else TOLERANCE
        if asserted and relative:
            note = f"asserted <= {CL_TOLERANCE:g} x output max abs" + (f"; {note}" if note else "")
        rows.append({"check": check, "err": err, "scale": scale, "asserted": asserted,
                     "note": note})  # fmt: skip
        status = f"asserted <= {tolerance:.0e}" if asserted else "not asserted"
        print(f"agreement: {check:62s} max abs diff {err:.2e} (output max {scale:.2f}; {status})"
              + (f"; {note}" if note else ""))  # fmt: skip
        if asserted and not err <= tolerance:
            raise SystemExit(f"diffx and NNSVS disagree: {check}: {err:.2e} > {tolerance:.1e}")

    theirs = peer_generator(peer, seed=1)
    ours = diffx_generator(seed=2)
    ours.load_state_dict(generator_state_to_diffx(theirs.state_dict()))
    ours_cl = diffx_generator(seed=2, channels_last=True)
    ours_cl.load_state_dict(generator_state_to_diffx(theirs.state_dict()))
    for noise_scale in (1.0, 0.0):
        theirs.noise_scale = ours.noise_scale = ours_cl.noise_scale = noise_scale
        outs = []
        for net in (theirs, ours, ours_cl):
            net.train()
            net.zero_grad(set_to_none=True)
            torch.manual_seed(123)  # the same frame-wise noise draw for all
            y = net(x)
            y.square().mean().backward()
            outs.append(y.detach())
        label = "seeded noise" if noise_scale else "noise_scale=0"
        grads = generator_state_to_diffx({k: p.grad for k, p in theirs.named_parameters()})
        g_scale = max(g.abs().max().item() for g in grads.values())
        for net, out, path in ((ours, outs[1], ""), (ours_cl, outs[2], f" ({DIFFX_CL})")):
            relative = net is ours_cl
            err = (outs[0] - out).abs().max().item()
            scale = outs[0].abs().max().item()
            add(f"generator output, train mode, {label}{path}", err, scale, True,
                relative=relative)  # fmt: skip
            ours_grads = dict(net.named_parameters())
            g_err = max((grads[k] - ours_grads[k].grad).abs().max().item() for k in grads)
            add(f"generator parameter gradients, {label}{path}", g_err, g_scale, True,
                relative=relative)  # fmt: skip
    theirs.noise_scale = ours.noise_scale = 1.0
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        torch.manual_seed(7)
        a = theirs.inference(x)
        torch.manual_seed(7)
        b = ours(x)
    edge = SMOOTHING
    err = (a - b).abs().max().item()
    inner = (a - b)[:, edge:-edge].abs().max().item() if x.shape[1] > 2 * edge else float("nan")
    add(
        f"generator inference, noise smoothed over {SMOOTHING} frames", err,
        a.abs().max().item(), False,
        f"NNSVS pads the noise by reflection, diffx by repeating the edge; frames "
        f"{edge}..{x.shape[1] - edge} (away from the edges): {inner:.1e}",
    )  # fmt: skip

    theirs_d = peer_discriminator(peer, D_PADDING, seed=3)
    ours_d = diffx_discriminator(seed=4)
    ours_d.load_state_dict(discriminator_state_to_diffx(theirs_d.state_dict()))
    ours_d_cl = diffx_discriminator(seed=4, channels_last=True)
    ours_d_cl.load_state_dict(ours_d.state_dict())
    with torch.no_grad():
        maps_t = theirs_d(x)[-1]
        maps_o = ours_d(x)
        maps_cl = ours_d_cl(x)
    scale = max(m.abs().max().item() for m in maps_t)
    for maps, path in ((maps_o, ""), (maps_cl, f" ({DIFFX_CL})")):
        err = max((a.reshape(b.shape) - b).abs().max().item() for a, b in zip(maps_t, maps))
        add(f"discriminator feature maps and score, recipe padding (0, 0){path}", err, scale,
            True, relative=bool(path))  # fmt: skip

    # Whole training steps: NNSVS's weights copied into both diffx tasks, the same seeds.
    theirs_step = peer_stepper(peer, seed=5)[0]
    net_g, net_d = theirs_step.nets
    ours_steps = {"": diffx_stepper(seed=6)[0], f" ({DIFFX_CL})": diffx_stepper(6, True)[0]}
    for ours_step in ours_steps.values():
        ours_step.task.postfilter.filters["mgc"].load_state_dict(
            generator_state_to_diffx(net_g.state_dict())
        )
        ours_step.task.discriminators["mgc"].load_state_dict(
            discriminator_state_to_diffx(net_d.state_dict())
        )
    for i in range(STEP_CHECKS):
        for fn in (theirs_step, *ours_steps.values()):
            torch.manual_seed(100 + i)
            fn(natural, predicted)
    theirs_state = {
        **{f"G.{k}": v for k, v in generator_state_to_diffx(net_g.state_dict()).items()},
        **{f"D.{k}": v for k, v in discriminator_state_to_diffx(net_d.state_dict()).items()},
    }
    scale = max(v.abs().max().item() for v in theirs_state.values())
    for path, ours_step in ours_steps.items():
        task = ours_step.task
        ours_state = {
            **{f"G.{k}": v for k, v in task.postfilter.filters["mgc"].state_dict().items()},
            **{f"D.{k}": v for k, v in task.discriminators["mgc"].state_dict().items()},
        }
        err = max((v - ours_state[k]).abs().max().item() for k, v in theirs_state.items())
        add(f"parameters after {STEP_CHECKS} GAN training steps{path}", err, scale, not path,
            "not asserted: Adam turns rounding-level gradient differences into steps of up to "
            "the learning rate (1e-4)" if path else "")  # fmt: skip
    return rows


def check_gv(peer, feats, gv, masks) -> list[dict]:
    rows = []
    batch, gv_t, mask_t = torch.from_numpy(feats), torch.from_numpy(gv), torch.from_numpy(masks)
    ours = {
        "all frames": variance_scaling(batch, gv_t, 1.0, GV_OFFSET).numpy(),
        "voiced frames": variance_scaling(batch, gv_t, 1.0, GV_OFFSET, frame_mask=mask_t).numpy(),
    }
    vs = peer.postfilters.variance_scaling
    theirs = {
        "all frames": np.stack([vs(gv, u, offset=GV_OFFSET) for u in feats]),
        "voiced frames": np.stack(
            [vs(gv, u, offset=GV_OFFSET, note_frame_indices=np.nonzero(m)[0])
             for u, m in zip(feats, masks)]
        ),
    }  # fmt: skip
    for name in ours:
        err = float(np.abs(ours[name] - theirs[name]).max())
        scale = float(np.abs(theirs[name]).max())
        rows.append({"check": f"GV variance scaling, {name}", "err": err, "scale": scale})
        print(f"agreement: GV {name:14s} max abs diff {err:.2e} (output max {scale:.2f})")
    return rows


# --------------------------------------------------------------------------------------------
# Peak memory in a fresh subprocess




def memory_child(lib: str, args) -> None:
    torch.set_num_threads(args.threads)
    peer = load_peer(args.peer_repo) if lib == PEER else None
    step = steppers(peer)[lib][0]
    step(*make_features(1, args.frames, seed=1))  # imports, Adam state
    natural, predicted = make_features(args.batch, args.frames)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = report.rss_kib("VmRSS")
    step(natural, predicted)
    print(json.dumps({"peak_mib": (report.rss_kib("VmHWM") - base) / 1024}))


def measure_memory(lib: str, args) -> float | str:
    cmd = [
        sys.executable, os.path.abspath(__file__), "--memory-child", lib, "--threads",
        str(args.threads), "--batch", str(args.batch), "--frames", str(args.frames),
        "--peer-repo", args.peer_repo,
    ]  # fmt: skip
    return report.child_peak_mib(cmd)


# --------------------------------------------------------------------------------------------
# Main








def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="generator and training step")
    ap.add_argument("--d-repeats", type=int, default=5, help="discriminator")
    ap.add_argument("--gv-repeats", type=int, default=10, help="GV variance scaling")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "RESULTS.md"))
    ap.add_argument("--peer-repo", default=os.environ.get("DIFFX_NNSVS_REPO", DEFAULT_REPO))
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args)
        return
    start_all = time.perf_counter()
    cpu_start = report.cpu_seconds()
    torch.set_num_threads(args.threads)

    peer, peer_note = None, ""
    try:
        peer = load_peer(args.peer_repo)
    except (OSError, subprocess.CalledProcessError, SyntaxError, AttributeError) as err:
        peer_note = (
            f"{PEER} skipped: unavailable ({type(err).__name__}: {str(err).strip()[:120]}); "
            "mirror github.com/nnsvs/nnsvs and pass --peer-repo or set $DIFFX_NNSVS_REPO"
        )
        print(peer_note)

    natural, predicted = make_features(args.batch, args.frames)
    x, x_real = mgc_input(predicted), mgc_input(natural)
    feats, gv, masks = gv_data()

    # Correctness first.
    agreement, gv_checks = [], []
    if peer is not None:
        agreement = check_agreement(peer, x[:2], natural[:2], predicted[:2])
        gv_checks = check_gv(peer, feats, gv, masks)

    busy = report.training_running()
    times, params = {}, {}
    g_calls, params["G"] = generator_calls(peer, x)
    times.update(time_interleaved(g_calls, args.repeats))
    del g_calls
    busy |= report.training_running()
    d_calls, d_shapes, params["D"] = discriminator_calls(peer, x_real)
    times.update(time_interleaved(d_calls, args.d_repeats))
    del d_calls
    busy |= report.training_running()
    step_fns = steppers(peer)
    params["step"] = {lib: p for lib, (_, p) in step_fns.items()}
    times.update(
        time_interleaved(
            {("train step", lib): (lambda s=s: s(natural, predicted))
             for lib, (s, _) in step_fns.items()},
            args.repeats,
        )
    )  # fmt: skip
    del step_fns
    busy |= report.training_running()
    times.update(time_interleaved(gv_calls(peer, feats, gv, masks), args.gv_repeats))
    for key, value in times.items():
        print(f"{key[0]:18s} {key[1]:24s} {value:9.1f} ms")

    memory = {}
    if not args.no_memory:
        for lib in ["diffx", DIFFX_CL] + ([PEER] if peer else []):
            memory[lib] = measure_memory(lib, args)
            print(f"memory train step {lib:10s} {fmt_ms(memory[lib])} MiB")

    busy |= report.training_running()
    if busy:
        print("warning: a `diffx fit` process ran during the benchmark; timings are skewed")
    elapsed = time.perf_counter() - start_all
    cpu_end = report.cpu_seconds()
    others = max(0.0, (cpu_end[0] - cpu_start[0]) - (cpu_end[1] - cpu_start[1])) / elapsed
    print(f"other processes used {others:.2f} cores on average during the run")
    write_report(
        args, peer, peer_note, agreement, gv_checks, times, params, d_shapes, memory, elapsed,
        (busy, others),
    )  # fmt: skip
    print(f"total {elapsed:.0f} s; wrote {args.out}")


def write_report(
    args, peer, peer_note, agreement, gv_checks, times, params, d_shapes, memory, elapsed, load
):
    busy, others = load
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"model name\s*:\s*(.+)", f.read()).group(1)
    except (OSError, AttributeError):
        pass
    libs = ["diffx", DIFFX_CL] + ([PEER] if peer else [])
    lines = [
        "# GAN post-filter benchmark: diffx vs NNSVS (CPU)",
        "",
        "Generated by `benchmarks/bench_postfilter.py`; do not edit by hand.",
        "",
        f"- Command: `{report.shown_command('benchmarks/bench_postfilter.py', sys.argv[1:])}`",
        f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}; total run time "
        f"{elapsed:.0f} s",
        f"- Machine: {cpu}; {os.cpu_count()} logical CPUs; {platform.platform()}",
        f"- Threads: torch.set_num_threads({args.threads}); load average at the end "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}; other processes used "
        f"{others:.2f} cores on average during the run (from `/proc/stat`; they skew timings"
        + (
            "; `diffx fit` training ran during the timings, so absolute times are inflated "
            "and noisy; the interleaved ratios are the figures to read)"
            if busy
            else ")"
        ),
        f"- Versions: torch {torch.__version__}, python {platform.python_version()}, numpy "
        f"{np.__version__}; peer: github.com/nnsvs/nnsvs at {peer.commit if peer else 'n/a'} "
        "(`nnsvs/postfilters.py`, `nnsvs/discriminators.py`, `train_step` of "
        "`nnsvs/bin/train_postfilter.py`, executed from a local mirror at run time)",
        f"- Settings: NNSVS's mgc post-filter recipe; batch {args.batch} x {args.frames} frames, "
        f"float32; generator on mgc[2:] ({IN_DIM} dims), channels {G_CHANNELS}, kernel "
        f"{G_KERNEL}, frame-wise noise, inference smoothing {SMOOTHING} frames; discriminator "
        f"channels {D_CHANNELS}, kernel {D_KERNEL}. Times are medians in ms of {args.repeats} "
        f"calls (discriminator {args.d_repeats}, GV {args.gv_repeats}) after one warm-up, the "
        f"implementations interleaved; `vs diffx` = the row's time / diffx's (default path) "
        f"time (for the peer: > 1, diffx is faster); `{PEER} / this` = the peer's time / the "
        "row's.",
        "",
    ]
    if peer_note:
        lines += [peer_note, ""]

    def rows(row_libs, columns, notes, counts=None):
        """One row per library: time and ratio per column, [parameters], notes."""
        out = []
        for lib in row_libs:
            cells = []
            for key in columns:
                t, d = times.get((key, lib), "-"), times.get((key, "diffx"))
                cells += [fmt_ms(t), ratio(t, d)]
            if counts is not None:
                cells.append(f"{counts.get(lib, 0):,}")
            out.append(f"| {lib} | {' | '.join(cells)} | {notes.get(lib, '')} |")
        return out

    lines += [
        "## 1. Generator (`Conv2dPostFilter`)",
        "",
        "| implementation | inference ms | vs diffx | fwd+bwd ms | vs diffx | parameters | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    g_notes = {
        "diffx": '`Conv2dPostFilter(58, 64, (5, 5), "frame_wise", smoothed_width=100)`',
        PEER: "`Conv2dPostFilter(in_dim=58, channels=64, kernel_size=(5, 5), noise_type="
        '"frame_wise", smoothing_width=100)`; `inference()` builds a `MovingAverage1d` per call',
        DIFFX_CL: CL_NOTE,
    }
    lines += rows(libs, ("G inference", "G fwd+bwd"), g_notes, params["G"])
    lines += [
        "",
        "`inference` = eval mode, noise smoothed, no grad; `fwd+bwd` = training mode, forward + "
        "backward of `mean(y^2)` w.r.t. all parameters.",
        "",
        "## 2. Discriminator, forward + backward",
        "",
        "| implementation | fwd+bwd ms | vs diffx | parameters | map sizes (frames x dims) | "
        "notes |",
        "|---|---:|---:|---:|---|---|",
    ]
    d_notes = {
        "diffx": "`Conv2dDiscriminator(32, (7, 3), padding=(0, 0))`, the `mgc` recipe's "
        "(diffx's default for `mgc`): no padding, the maps shrink",
        PEER: "`Conv2dD(channels=32, kernel_size=(7, 3), padding=(0, 0))` as in the recipe",
        DIFFX_D_SAME: "`padding=None` (-> (3, 1)): keeps the feature axis (the `bap` recipe's "
        "choice; 1-dim streams need it)",
        PEER_D_SAME: "same class with `padding=None` (-> (3, 1))",
        DIFFX_CL: "the same module with `.to(memory_format=torch.channels_last)`",
    }
    for lib in libs + [DIFFX_D_SAME] + ([PEER_D_SAME] if peer else []):
        reference = "diffx" if lib in libs else DIFFX_D_SAME
        t, d = times.get(("D fwd+bwd", lib), "-"), times.get(("D fwd+bwd", reference))
        lines.append(
            f"| {lib} | {fmt_ms(t)} | {ratio(t, d)} | {params['D'].get(lib, 0):,} | "
            f"{d_shapes.get(lib, '-')} | {d_notes[lib]} |"
        )
    lines += [
        "",
        f"Forward + backward of `mean(score^2)` w.r.t. the input ({args.batch} x {args.frames} x "
        f"{IN_DIM}) and all parameters.",
        "",
        "## 3. GAN training step (discriminator update + generator update)",
        "",
        f"| implementation | ms per step | steps/s | vs diffx | {PEER} / this | peak MiB | "
        "parameters (G + D) | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    s_notes = {
        "diffx": "`GANPostFilter.training_step` (Lightning hooks replaced by plain torch calls)",
        DIFFX_CL: "the same with `GANPostFilter(channels_last=True)`: both networks' weights "
        "channels-last",
        PEER: "`train_step` of `nnsvs/bin/train_postfilter.py`, `MultistreamPostFilter` + "
        "`Conv2dD`; `compute_distortions` stubbed out",
    }
    d, p = times.get(("train step", "diffx")), times.get(("train step", PEER))
    for lib in libs:
        t = times.get(("train step", lib), "-")
        per_s = f"{1e3 / t:.2f}" if isinstance(t, float) else "-"
        lines.append(
            f"| {lib} | {fmt_ms(t)} | {per_s} | {ratio(t, d)} | {ratio(p, t)} | "
            f"{fmt_ms(memory.get(lib, '-'))} | {params['step'].get(lib, 0):,} | {s_notes[lib]} |"
        )
    lines += [
        "",
        "LSGAN, adversarial weight 1, feature matching 10, MSE 0, Adam (1e-4, betas 0.5/0.9), "
        "gradient norms clipped to 1, V/UV mask on the discriminator's input; 67-dim features "
        "in, the generator on mgc[2:], the discriminator on mgc[2:] of natural and generated."
        + (
            " Peak memory: fresh subprocess per row, peak RSS during one step (after a "
            "warm-up step at batch 1) minus the RSS before it."
            if memory
            else ""
        ),
        "",
        f"## 4. GV post-filter: variance scaling of {GV_UTTS} utterances x {GV_FRAMES} frames x "
        f"{GV_DIMS} dims, offset {GV_OFFSET}",
        "",
        "| implementation | all frames ms | vs diffx | voiced frames ms | vs diffx | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    gv_notes = {
        "diffx": "`variance_scaling` on one `(100, 1000, 60)` tensor (`frame_mask` for voiced)",
        "diffx, per utterance": "`variance_scaling` called once per `(1000, 60)` utterance",
        PEER: "NumPy `variance_scaling` once per utterance (`note_frame_indices` for voiced)",
    }
    gv_libs = ["diffx", "diffx, per utterance"] + ([PEER] if peer else [])
    lines += rows(gv_libs, ("GV all frames", "GV voiced frames"), gv_notes)
    lines += [
        "",
        "Inputs prepared beforehand (float32 NumPy arrays for NNSVS, tensors sharing their "
        "memory for diffx); the output is not copied back.",
        "",
    ]
    if agreement or gv_checks:
        lines += [
            "## Agreement (before timing)",
            "",
            "NNSVS's weights copied into diffx's networks, the same seed for the noise; max "
            f"abs difference on 2 segments of {args.frames} frames (asserted ones must be <= "
            f"{TOLERANCE:g}, else the script stops); GV on the {GV_UTTS} utterances below:",
            "",
            "| check | max abs diff | output max abs | asserted | notes |",
            "|---|---:|---:|---|---|",
        ]
        for r in agreement:
            lines.append(
                f"| {r['check']} | {r['err']:.1e} | {r['scale']:.2f} | "
                f"{'yes' if r['asserted'] else 'no'} | {r['note']} |"
            )
        for r in gv_checks:
            lines.append(
                f"| {r['check']} | {r['err']:.1e} | {r['scale']:.2f} | no | float32 both |"
            )
        lines.append("")
    lines += ["## Differences between the implementations", ""]
    lines += [f"- {item}" for item in DIFFERENCES]
    report.write_section(args.out, "postfilter", "\n".join(lines))


CL_NOTE = (
    "the same module with `.to(memory_format=torch.channels_last)`: channels-last "
    "convolutions, and layers 2-4 convolve the hidden maps and the input plane apart (64/128 "
    "input channels instead of 65/129)"
)

DIFFERENCES = [
    "Discriminator padding: NNSVS's `mgc` recipe builds `Conv2dD` with `padding: [0, 0]`, so "
    "with kernel (7, 3) every layer trims 6 frames and 2 dims (58 dims -> 48, 256 frames -> 20 "
    "scores); diffx's `mgc` default is the same. Padding (3, 1) keeps the feature axis (1-dim "
    "streams such as `bap` at 16 kHz need it; NNSVS's `bap` recipe pads too) and costs more "
    "positions per layer; section 2 times both, each ratio against diffx at the same padding.",
    "Generator initialisation: diffx starts the last convolution at zero (the untrained filter "
    "is the identity); NNSVS draws it Kaiming-normal. Same layers and parameter count; the "
    "agreement checks copy NNSVS's weights into diffx's.",
    "Inference noise smoothing: NNSVS builds a `MovingAverage1d` (a `Conv1d`, reflection "
    "padding) on every `inference()` call; diffx smooths with a fixed moving average padded by "
    "repeating the edge values. Equal away from the first and last frames.",
    "Feature matching: both generator updates reuse the discriminator's maps of the natural "
    "features computed for the discriminator update (by the discriminator before that "
    "update).",
    "Training step extras: NNSVS's `train_step` also computes the masked MSE (weight 0) and "
    "logs every loss with `.item()`; its per-step `compute_distortions` (MCD, F0 RMSE, ... on "
    "de-normalized features) is not run here. diffx computes the MSE too (for the log), skips "
    "feature matching at weight 0, and normalizes its stream with the scaler (identity "
    "here); the Lightning `Trainer`'s own per-step overhead is not included.",
    "Generator update: diffx freezes the discriminator's parameters meanwhile, so the "
    "backward pass through it computes input gradients only; NNSVS also computes its weight "
    "gradients, which the next discriminator update zeroes unused. Same results, bit for bit.",
    "`diffx, channels_last` (`GANPostFilter(channels_last=True)`): float32 rounding differs "
    "from the default path and NNSVS (outputs ~1e-6 relative; parameter gradients up to ~3e-4 "
    "relative per tensor after a step, the order of either path's own float32 error against a "
    "float64 reference), so its agreement rows are asserted relative to the output's size.",
    "V/UV mask: NNSVS masks frames where both the natural and the predicted V/UV are > 0; "
    "diffx where the natural V/UV is > 0.5 (the same frames here: both V/UV streams are the "
    "same 0/1 pattern).",
]


if __name__ == "__main__":
    main()
