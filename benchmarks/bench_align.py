"""Phase alignment on a generated suite: does the fit find the phase?

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_align.py

Part 1, known cascades. Each case is drawn from its seed: 1 to 8 allpass sections (second
order with probability 0.7, else first order; traditional, or warped with probability 0.3 and
a warping coefficient in [-0.5, 0.5]), section pole radii uniform in [0.3, 0.97] or, in every
other case, [0.3, 0.99], second-order centre frequencies log-uniform in 20 Hz - 18 kHz, at
44.1 or 48 kHz; the dry is 3 s of white noise, pink noise or a demo recording (guitar, bass,
voice; a random crop, the voice whole), the wet is the dry through the cascade (scipy, float64).
A fit succeeds when the aligned dry's normalized cross-correlation with the wet at lag 0
exceeds 0.99 and its phase response is within 5 degrees of the true cascade's at every
frequency where the dry has energy (Welch power spectral density within 50 dB of its peak,
between 0 Hz and Nyquist, exclusive). Classes: "<= 4 sections, radius <= 0.97" (by the true
cascade's largest pole radius, warping included) and all cases (up to 8 sections, 0.99).

Part 2, real effects with frequency-dependent phase (pedalboard): phaser without and with
slow modulation, high-pass, low-shelf, peak and ladder filters, and diffx's parametric EQ, on
white noise and the guitar; the parallel-mix test as recorded, after the best delay, and
after alignment.

Side by side in the same run, on a subset of part 1 (``--peer-cases``): diffx's previous
default (BiasNet trained by gradient descent through Lightning, 1000 steps, the 0.1 release's
``diffx align``), and Bargum et al.'s own code (github.com/abargum/diff-apf, read at run time
from ``--diff-apf``, never copied here; its sample rate constant set to the case's rate; its
recipe: 3 warped second-order sections and 1 warped first-order section, Adam 1e-5, M-STFT
loss, batches of 2048-sample sequences), each under a wall-clock budget per fit.

Writes the "alignment" section of benchmarks/RESULTS.md and, with ``--json``, every case.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.signal
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import write_section  # noqa: E402

from diffx.analysis.allpass_fit import fit_pair  # noqa: E402
from diffx.analysis.phase_alignment import (  # noqa: E402
    apply_delay,
    fractional_delay_estimate,
    parallel_mix,
)
from diffx.functional.allpass import allpass_sos  # noqa: E402
from diffx.io.audio import load_demo  # noqa: E402

SIGNALS = ("white", "pink", "guitar", "bass", "voice")
DEMO = {"guitar": "guitar_em9", "bass": "bass", "voice": "voice"}
SECONDS = 3.0
ENERGY_DB = 50.0
NCC_GOAL, PHASE_GOAL_DEG = 0.99, 5.0


# --------------------------------------------------------------------------------------------
# the suite


@dataclass
class Case:
    seed: int
    sample_rate: int
    signal: str
    n_sections: int
    warped: bool
    radius_cap: float
    max_pole_radius: float
    sos: list

    @property
    def easy(self) -> bool:
        """In the first goal's class: <= 4 sections, every pole radius <= 0.97."""
        return self.n_sections <= 4 and self.max_pole_radius <= 0.97 + 1e-9


def make_case(seed: int) -> Case:
    """The known cascade of case ``seed`` (module notes)."""
    rng = np.random.default_rng(1000 + seed)
    fs = int(rng.choice([44100, 48000]))
    signal = SIGNALS[seed % len(SIGNALS)]
    n = int(rng.integers(1, 9))
    cap = 0.97 if seed % 2 == 0 else 0.99
    warped = bool(rng.random() < 0.3)
    rows = []
    for _ in range(n):
        radius = float(rng.uniform(0.3, cap))
        warp = float(rng.uniform(-0.5, 0.5)) if warped else None
        if rng.random() < 0.7:
            freq = float(math.exp(rng.uniform(math.log(20.0), math.log(18000.0))))
            kw = dict(pole_radius=radius, freq_hz=freq)
        else:
            kw = dict(first_order_coeff=radius * float(rng.choice([-1.0, 1.0])))
        kind = "warped" if warped else ("second_order" if "freq_hz" in kw else "first_order")
        if warped:
            kw["warp"] = warp
        rows.append(allpass_sos(fs, kind, dtype=torch.float64, **kw)[0].numpy())
    sos = np.concatenate(rows)
    radius = max(float(np.abs(np.roots(r[3:])).max()) if r[4] or r[5] else 0.0 for r in sos)
    return Case(seed, fs, signal, n, warped, cap, radius, sos.tolist())


def pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Gaussian noise with a 1/f power spectrum (-3 dB per octave), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size)
    spectrum[1:] /= np.sqrt(f[1:])
    spectrum[0] = 0
    x = np.fft.irfft(spectrum, n)
    return x / np.sqrt(np.mean(x**2))


def dry_signal(case: Case) -> np.ndarray:
    rng = np.random.default_rng(case.seed)
    n = int(SECONDS * case.sample_rate)
    if case.signal == "white":
        return 0.1 * rng.standard_normal(n)
    if case.signal == "pink":
        return 0.1 * pink_noise(rng, n)
    audio, _ = load_demo(DEMO[case.signal], sample_rate=case.sample_rate)
    audio = audio[0].double().numpy()
    if audio.size <= n:
        return audio
    start = int(rng.integers(0, audio.size - n))
    return audio[start : start + n]


def energy_band(dry: np.ndarray, sample_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (0 < f < Nyquist) where the dry's Welch PSD is within ENERGY_DB of its
    peak, and a 4096-point grid to test them on."""
    f, psd = scipy.signal.welch(dry, fs=sample_rate, nperseg=min(4096, dry.size))
    keep = (f > 0) & (f < sample_rate / 2) & (psd >= psd.max() * 10 ** (-ENERGY_DB / 10))
    return f[keep], psd[keep]


def alignment_phase(sos, delay_samples, polarity, freqs_hz, sample_rate) -> np.ndarray:
    """Phase (radians) of ``polarity * z^-delay * sos`` at ``freqs_hz``."""
    h = np.ones(freqs_hz.size, complex)
    if len(sos):
        _, h = scipy.signal.sosfreqz(np.asarray(sos), worN=freqs_hz, fs=sample_rate)
    omega = 2 * np.pi * freqs_hz / sample_rate
    return np.angle(h) - omega * delay_samples + (np.pi if polarity < 0 else 0.0)


def judge(case: Case, dry, wet, aligned, sos, delay, polarity) -> dict:
    f, _ = energy_band(dry, case.sample_rate)
    return verdict(case, f, alignment_phase(sos, delay, polarity, f, case.sample_rate),
                   aligned, wet)  # fmt: skip


def verdict(case: Case, freqs_hz, fitted_phase, aligned, wet) -> dict:
    """The success criterion (module notes) for a fitted phase at ``freqs_hz`` (the dry's
    energy band) and the aligned dry."""
    truth = alignment_phase(case.sos, 0.0, 1, freqs_hz, case.sample_rate)
    err = np.degrees(np.abs(np.angle(np.exp(1j * (fitted_phase - truth)))))
    mix = parallel_mix(aligned, wet)
    ok = mix.ncc > NCC_GOAL and float(err.max()) < PHASE_GOAL_DEG
    return {"ncc": mix.ncc, "comb_loss_db": mix.comb_loss_db,
            "max_phase_error_deg": float(err.max()), "success": bool(ok)}  # fmt: skip


def run_diffx(case: Case) -> dict:
    dry = dry_signal(case)
    wet = scipy.signal.sosfilt(np.asarray(case.sos), dry)
    t0 = time.perf_counter()
    fit = fit_pair(dry, wet, case.sample_rate)
    seconds = time.perf_counter() - t0
    aligned = fit.apply(dry)
    out = judge(case, dry, wet, aligned, fit.sos(), fit.delay_samples, fit.polarity)
    out.update(seconds=seconds, fitted_poles=0 if fit.fit is None else fit.fit.poles.n_poles,
               fallback=fit.fallback)  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# peers (subset)


def run_biasnet(case: Case, budget_s: float) -> dict:
    """diffx 0.1's default: BiasNet (4 second-order sections) by gradient descent, 1000 steps,
    the bulk-lag search and delay fall-back of that release."""
    from diffx.tasks.phase_alignment import fit_channel

    dry = dry_signal(case)
    wet = scipy.signal.sosfilt(np.asarray(case.sos), dry)
    t0 = time.perf_counter()
    alignment, _ = fit_channel(torch.from_numpy(dry), torch.from_numpy(wet), case.sample_rate,
                               steps=1000, progress=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    aligned = alignment.apply(dry)
    out = judge(case, dry, wet, aligned, alignment.sos, alignment.delay_samples,
                alignment.polarity)  # fmt: skip
    out.update(seconds=seconds)
    return out


DIFF_APF_CHILD = r"""
import json, sys, time, types
import numpy as np, torch
repo, fs, budget = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
data = np.load(sys.argv[4])
dry, wet = data["dry"], data["wet"]

def load(name):
    # The reference code hard-codes 192 kHz in its coefficient formulas; use the case's rate.
    src = open(f"{repo}/filters/{name}.py").read().replace("192000", str(fs))
    mod = types.ModuleType(name)
    exec(compile(src, name, "exec"), mod.__dict__)
    return mod

sys.path.insert(0, repo)
# losses.py imports torchaudio without using it; the torchaudio wheel need not match torch here
sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
import losses
W2, W1 = load("Allpass_2ndOrder_W"), load("Allpass_1stOrder_W")
torch.manual_seed(0)
model = torch.nn.Sequential(W2.AllPass2ndOrder_W(), W2.AllPass2ndOrder_W(),
                            W2.AllPass2ndOrder_W(), W1.AllPass1stOrder_W())
criterion = losses.LossModule(loss_term="M-STFT")
opt = torch.optim.Adam(model.parameters(), lr=1e-5)
L = 2048
n = dry.size // L
x = torch.tensor(dry[: n * L].reshape(n, L, 1))
y = torch.tensor(wet[: n * L].reshape(n, L, 1))
batch = min(512, n)
steps, t0 = 0, time.perf_counter()
gen = torch.Generator().manual_seed(0)
while time.perf_counter() - t0 < budget:
    idx = torch.randperm(n, generator=gen)[:batch]
    xb = torch.nn.functional.normalize(x[idx])
    pred = model(xb)
    opt.zero_grad()
    loss = criterion(y[idx], pred)
    loss.backward()
    opt.step()
    steps += 1
seconds = time.perf_counter() - t0
# Its filters run sample by sample in Python (about 2 ms a sample here): take the impulse
# response, as its notebook does, and convolve.
impulse = torch.zeros(1, IR_SAMPLES, 1)
impulse[0, 0, 0] = 1.0
with torch.no_grad():
    h = model(impulse).reshape(-1).numpy()
print(json.dumps({"steps": steps, "seconds": seconds, "impulse_response": h.tolist()}))
""".replace("IR_SAMPLES", "4096")


def run_diff_apf(case: Case, repo: str, budget_s: float) -> dict:
    """Bargum et al.'s own training code in a child process (it sets torch's default dtype
    globally at import), stopped after ``budget_s`` of training; its fitted filter is applied
    as its 4096-sample impulse response."""
    import tempfile

    dry = dry_signal(case)
    wet = scipy.signal.sosfilt(np.asarray(case.sos), dry)
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(f"{tmp}/pair.npz", dry=dry, wet=wet)
        proc = subprocess.run(
            [sys.executable, "-c", DIFF_APF_CHILD, repo, str(case.sample_rate), str(budget_s),
             f"{tmp}/pair.npz"],
            capture_output=True, text=True, timeout=budget_s + 600,
        )  # fmt: skip
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1][:200]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    aligned = scipy.signal.fftconvolve(dry, np.asarray(res["impulse_response"]))[: dry.size]
    # Its model's phase: measured from the aligned output (it keeps no sos of its own).
    f, _ = energy_band(dry, case.sample_rate)
    _, h = scipy.signal.csd(dry, aligned, fs=case.sample_rate, nperseg=4096)
    fw, sxx = scipy.signal.welch(dry, fs=case.sample_rate, nperseg=4096)
    fitted = np.angle(np.interp(f, fw, (h / sxx).real) + 1j * np.interp(f, fw, (h / sxx).imag))
    out = verdict(case, f, fitted, aligned, wet)
    out.update(seconds=res["seconds"], steps=res["steps"])
    return out


# --------------------------------------------------------------------------------------------
# tables


def summarize(rows: list[dict], key: str = "diffx") -> dict:
    done = [r[key] for r in rows if key in r and "error" not in r[key]]
    if not done:
        return {"n": 0}
    return {
        "n": len(done),
        "success": sum(d["success"] for d in done) / len(done),
        "median_comb_loss_db": float(np.median([d["comb_loss_db"] for d in done])),
        "median_seconds": float(np.median([d["seconds"] for d in done])),
    }


def class_rows(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    out = [("<= 4 sections, radius <= 0.97 (goal >= 95 %)", [r for r in rows if r["easy"]]),
           ("all: 1-8 sections, radius <= 0.99 (goal >= 80 %)", rows)]  # fmt: skip
    for n_lo, n_hi in ((1, 2), (3, 4), (5, 6), (7, 8)):
        sub = [r for r in rows if n_lo <= r["n_sections"] <= n_hi]
        out.append((f"{n_lo}-{n_hi} sections", sub))
    out.append(("radius > 0.97", [r for r in rows if r["max_pole_radius"] > 0.97]))
    out.append(("warped", [r for r in rows if r["warped"]]))
    for s in SIGNALS:
        out.append((f"signal: {s}", [r for r in rows if r["signal"] == s]))
    for fs in (44100, 48000):
        out.append((f"{fs} Hz", [r for r in rows if r["sample_rate"] == fs]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=240)
    parser.add_argument("--peer-cases", type=int, default=10,
                        help="cases (the first of the suite) also fitted by the peers")
    parser.add_argument("--peer-budget-s", type=float, default=120.0,
                        help="wall-clock training budget of one peer fit")
    parser.add_argument("--diff-apf", default=None,
                        help="a checkout of github.com/abargum/diff-apf (skipped without)")
    parser.add_argument("--skip-effects", action="store_true")
    parser.add_argument("--json", default=None, help="write every case here")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--render-json", default=None,
                        help="only write the tables of an earlier run's --json file")
    args = parser.parse_args()
    if args.render_json:
        saved = json.loads(Path(args.render_json).read_text())
        md = render(saved["cases"], saved["effects"], argparse.Namespace(**saved["args"]))
        print(md)
        if not args.no_write:
            write_section(str(HERE / "RESULTS.md"), "alignment", md)
        return

    from tqdm import tqdm

    rows = []
    for seed in tqdm(range(args.cases), desc="known cascades"):
        case = make_case(seed)
        row = {k: v for k, v in asdict(case).items() if k != "sos"}
        row["easy"] = case.easy
        row["diffx"] = run_diffx(case)
        rows.append(row)
    for row in tqdm(rows[: args.peer_cases], desc="peers"):
        case = make_case(row["seed"])
        row["biasnet"] = run_biasnet(case, args.peer_budget_s)
        if args.diff_apf:
            row["diff_apf"] = run_diff_apf(case, args.diff_apf, args.peer_budget_s)
    effects = [] if args.skip_effects else run_effects()
    if args.json:
        Path(args.json).write_text(json.dumps({"cases": rows, "effects": effects,
                                               "args": vars(args)}, indent=1))
    md = render(rows, effects, args)
    print(md)
    if not args.no_write:
        write_section(str(HERE / "RESULTS.md"), "alignment", md)


# --------------------------------------------------------------------------------------------
# real effects


def effect_chain():
    """``(name, fn(x float32 (n,), fs) -> (n,))`` for every effect of part 2."""
    effects = []
    try:
        import pedalboard as pb
    except ImportError:  # pragma: no cover - the dev extra installs it
        pb = None
    if pb is not None:
        def board(*plugins):
            b = pb.Pedalboard(list(plugins))
            return lambda x, fs: b(x.astype(np.float32)[None], fs)[0].astype(np.float64)

        effects += [
            ("pedalboard Phaser, no modulation",
             board(pb.Phaser(rate_hz=0.0, depth=0.0, centre_frequency_hz=1000, feedback=0.0,
                             mix=1.0))),
            ("pedalboard Phaser, 0.2 Hz modulation",
             board(pb.Phaser(rate_hz=0.2, depth=0.5, centre_frequency_hz=1000, feedback=0.0,
                             mix=1.0))),
            ("pedalboard HighpassFilter 200 Hz", board(pb.HighpassFilter(200.0))),
            ("pedalboard LowShelfFilter 250 Hz +6 dB",
             board(pb.LowShelfFilter(250.0, gain_db=6.0, q=0.707))),
            ("pedalboard PeakFilter 1 kHz +9 dB Q 1",
             board(pb.PeakFilter(1000.0, gain_db=9.0, q=1.0))),
            ("pedalboard LadderFilter LPF24 2 kHz",
             board(pb.LadderFilter(pb.LadderFilter.Mode.LPF24, cutoff_hz=2000, resonance=0.2,
                                   drive=1.0))),
        ]  # fmt: skip

    def diffx_eq(x, fs):
        from diffx.functional import parametric_eq

        t = torch.from_numpy(x).reshape(1, 1, -1)
        with torch.no_grad():
            y = parametric_eq(
                t, fs, low_shelf_freq_hz=120.0, low_shelf_gain_db=4.0,
                band_freqs_hz=torch.tensor([400.0, 2500.0]),
                band_gains_db=torch.tensor([-6.0, 5.0]), band_qs=torch.tensor([1.5, 2.0]),
                high_shelf_freq_hz=8000.0, high_shelf_gain_db=-4.0,
            )  # fmt: skip
        return y.reshape(-1).numpy()

    effects.append(("diffx parametric_eq (shelves, 2 peaks)", diffx_eq))
    return effects


def run_effects() -> list[dict]:
    from tqdm import tqdm

    out = []
    fs = 44100
    rng = np.random.default_rng(7)
    n = int(SECONDS * fs)
    guitar = load_demo("guitar_em9", sample_rate=fs)[0][0, :n].double().numpy()
    signals = {"white noise": 0.1 * rng.standard_normal(n), "guitar": guitar}
    for name, fn in tqdm(effect_chain(), desc="real effects"):
        for sig_name, dry in signals.items():
            wet = fn(dry, fs)
            t0 = time.perf_counter()
            fit = fit_pair(dry, wet, fs)
            seconds = time.perf_counter() - t0
            delay = fractional_delay_estimate(dry, wet)
            out.append({
                "effect": name, "signal": sig_name,
                "recorded": vars(parallel_mix(dry, wet)),
                "delay": vars(parallel_mix(apply_delay(dry, delay.delay_samples, delay.polarity),
                                           wet)),
                "aligned": vars(parallel_mix(fit.apply(dry), wet)),
                "poles": 0 if fit.fit is None else fit.fit.poles.n_poles,
                "fallback": fit.fallback, "seconds": seconds,
            })  # fmt: skip
    return out


def render(rows, effects, args) -> str:
    cmd = (
        "OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_align.py "
        f"--cases {args.cases} --peer-cases {args.peer_cases} "
        f"--peer-budget-s {args.peer_budget_s:g}"
        + (" --diff-apf <checkout of github.com/abargum/diff-apf>" if args.diff_apf else "")
    )
    lines = [
        "## Phase alignment: known cascades (success = NCC at lag 0 > 0.99 and phase within "
        "5 degrees of the truth wherever the dry has energy)",
        "",
        f"`{cmd}` ({len(rows)} cases, 3 s each; one CPU thread; times per fit include the "
        "response measurements from every bulk lag, both passes, the delay fall-back and the "
        "comb-loss checks).",
        "",
        "| class | cases | success | median comb-filter loss (dB) | median time per fit (s) |",
        "|---|---|---|---|---|",
    ]
    for name, sub in class_rows(rows):
        s = summarize(sub)
        if s["n"]:
            lines.append(f"| {name} | {s['n']} | {100 * s['success']:.1f} % | "
                         f"{s['median_comb_loss_db']:+.4f} | {s['median_seconds']:.2f} |")
    fell_back = [str(r["seed"]) for r in rows if r["diffx"].get("fallback")]
    lines += ["", f"The delay fall-back (no section) was kept in {len(fell_back)} of {len(rows)} "
              "known cascades" + (f" (seeds {', '.join(fell_back)})." if fell_back else ".")]
    fails = [r for r in rows if not r["diffx"]["success"]]
    if fails:
        lines += ["", "Failed cases (seed: sections, largest pole radius, signal, rate -> NCC, "
                  "largest phase error):", ""]
        for r in fails:
            d = r["diffx"]
            warped = " warped" if r["warped"] else ""
            lines.append(f"- {r['seed']}: {r['n_sections']} sections{warped}, "
                         f"radius {r['max_pole_radius']:.3f}, {r['signal']}, "
                         f"{r['sample_rate']} Hz -> "
                         f"NCC {d['ncc']:.4f}, {d['max_phase_error_deg']:.1f} deg")
    peers = [r for r in rows if "biasnet" in r]
    if peers:
        lines += ["", f"### Side by side on the first {len(peers)} cases", "",
                  "| method | cases | success | median comb-filter loss (dB) "
                  "| median time per fit (s) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for key, name in (("diffx", "diffx fit_pair (new default)"),
                          ("biasnet", "diffx 0.1 default: BiasNet, 1000 Adam steps"),
                          ("diff_apf", f"Bargum et al.'s code, {args.peer_budget_s:.0f} s budget")):
            s = summarize(peers, key)
            if s["n"]:
                lines.append(f"| {name} | {s['n']} | {100 * s['success']:.0f} % | "
                             f"{s['median_comb_loss_db']:+.4f} | {s['median_seconds']:.1f} |")
        steps = [r["diff_apf"]["steps"] for r in peers if "steps" in r.get("diff_apf", {})]
        if steps:
            lines.append(f"\nBargum et al.'s code reached {min(steps)}-{max(steps)} Adam steps "
                         "in its budget (its recipe trains 500 epochs).")
    if effects:
        lines += ["", "## Phase alignment: real effects (comb-filter loss dB / NCC at lag 0)", "",
                  "| effect | signal | as recorded | best delay | aligned | poles | s |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for e in effects:
            cells = [f"{e[k]['comb_loss_db']:+.2f} / {e[k]['ncc']:.3f}"
                     for k in ("recorded", "delay", "aligned")]
            poles = "delay only" if e["fallback"] else str(e["poles"])
            lines.append(f"| {e['effect']} | {e['signal']} | {' | '.join(cells)} | {poles} | "
                         f"{e['seconds']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
