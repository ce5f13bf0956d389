"""Evaluate trained style-transfer models against the baselines on their held-out test sets.

    python scripts/style_transfer_report.py \
        --model autodiff=outputs/style_transfer/quickstart/checkpoints/last.ckpt \
        --model spsa=outputs/style_transfer/spsa_pedalboard/checkpoints/last.ckpt \
        --proxy eq=outputs/style_transfer/proxy_eq/proxy.pt \
        --out outputs/style_transfer/report.md

Each model is rebuilt from the ``config.yaml`` beside its checkpoint, and its data module makes
the test set (held-out audio: the end of every recording; fixed crops and parameters from the
config's seed). On that same test set the script scores two baselines, no processing (the input
as it is) and the rule-based match (:func:`diffx.analysis.style_transfer.rule_based_match`: loudness
matching, a 6-band EQ fitted to the reference's average spectrum, a compressor set from its
crest factor), and the model. Metrics (:func:`diffx.analysis.style_transfer.style_metrics`): MR-STFT
(auraloss defaults), loudness error (LU, pyloudnorm), spectral-centroid error (Hz), crest-factor
error (dB), and the parameter error (mean absolute error of the normalized parameters) where the
true parameters are known (``process_input: false`` test sets make them exact).

``--proxy name=file`` reports each neural proxy's error-to-signal ratio against the effect it
imitates, on the held-out crops of the first model's test set with random parameters.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from diffx.effects.proxy import load_proxy
from diffx.tasks.runs import load_style_run

METRICS = ("mrstft", "lufs_error_lu", "centroid_error_hz", "crest_error_db", "width_error_db",
           "param_error")  # fmt: skip
HEADER = (
    "| test set | method | MR-STFT | LUFS error (LU) | centroid error (Hz) | "
    "crest error (dB) | width error (dB, stereo) | param error |"
)


def _row(test_set: str, method: str, means: dict[str, float]) -> str:
    cells = [f"{means[m]:.3f}" if m in means else "-" for m in METRICS]
    return f"| {test_set} | {method} | " + " | ".join(cells) + " |"


def evaluate_model(name: str, ckpt: str, process_input: bool | None, limit: int | None):
    """Rows for no processing, the rule-based match and the model on the model's test set.

    The numbers are :meth:`diffx.tasks.StyleTransfer.evaluate`'s, the same that ``diffx test``
    logs: the model's metrics, ``input_*`` (no processing) and ``rule_*`` (rule-based match).
    """
    model, datamodule = load_style_run(ckpt)
    if process_input is not None:
        datamodule.process_input = process_input
    datamodule.setup("test")
    sums: dict[str, float] = {}
    count = 0
    for batch in tqdm(datamodule.fixed["test"], desc=f"{name}: test set", leave=False):
        if limit is not None and count >= limit:
            break
        with torch.no_grad():
            metrics = model.evaluate(batch, datamodule.chain)
        for metric, values in metrics.items():
            sums[metric] = sums.get(metric, 0.0) + float(values.double().sum())
        count += batch["input"].shape[0]
    means = {k: v / count for k, v in sums.items()}

    def method(prefix: str) -> dict[str, float]:
        return {k[len(prefix) :]: v for k, v in means.items() if k.startswith(prefix)}

    model_means = {k: v for k, v in means.items() if not k.startswith(("input_", "rule_"))}
    chain = " + ".join(type(e).__name__ for e in datamodule.chain.effects)
    inputs = "processed" if datamodule.process_input else "clean"
    test_set = f"{name}: {count} held-out demo crops, {chain} styles, {inputs} inputs"
    return [
        _row(test_set, "no processing", method("input_")),
        _row(test_set, "rule-based match", method("rule_")),
        _row(test_set, f"{name} ({model.gradient})", model_means),
    ]


def proxy_fidelity(name: str, path: str, effect, batches, seed: int = 0) -> str:
    """ESR (and dB) of a proxy against its effect on held-out crops with random parameters."""
    proxy = load_proxy(path)
    generator = torch.Generator().manual_seed(seed)
    error = energy = 0.0
    for batch in batches:
        x = batch["input"]
        params = torch.rand(x.shape[0], proxy.parameter_size(), generator=generator)
        with torch.no_grad():
            real = effect(x, params)
            imitation = proxy(x, params)
        error += float((imitation - real).double().square().sum())
        energy += float(real.double().square().sum())
    esr = error / max(energy, 1e-30)
    esr_db = 10 * torch.log10(torch.tensor(esr))
    return f"| {name} | {proxy.effect_name} | {esr:.4f} | {esr_db:.1f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=CKPT",
        help="a trained StyleTransfer checkpoint (repeatable)",
    )
    parser.add_argument(
        "--proxy",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a proxy file; its effect is the model chain's effect NAME",
    )
    parser.add_argument(
        "--clean-inputs",
        action="store_true",
        help="also score every model on clean inputs (exact parameter error)",
    )
    parser.add_argument("--limit", type=int, default=None, help="test examples per set")
    parser.add_argument("--out", default=None, help="write the markdown tables here")
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("give at least one --model NAME=CKPT")
    start = time.time()
    lines = [HEADER, "|" + "---|" * 8]
    first = None
    for entry in args.model:
        name, _, ckpt = entry.partition("=")
        lines += evaluate_model(name, ckpt, None, args.limit)
        if args.clean_inputs:
            lines += evaluate_model(f"{name}, clean inputs", ckpt, False, args.limit)
        first = first or ckpt
    if args.proxy:
        model, datamodule = load_style_run(first)
        datamodule.setup("test")
        effects = dict(zip(model.chain.names, model.chain.effects))
        lines += ["", "| proxy | imitates | ESR | ESR (dB) |", "|---|---|---|---|"]
        for entry in args.proxy:
            name, _, path = entry.partition("=")
            if name not in effects:
                parser.error(f"--proxy {name}: the chain has effects {sorted(effects)}")
            lines.append(proxy_fidelity(name, path, effects[name], datamodule.fixed["test"]))
    report = "\n".join(lines)
    print(report)
    print(f"\n({time.time() - start:.0f} s)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
