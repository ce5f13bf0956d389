#!/usr/bin/env python3
"""Render a small timbre-transfer training set into ``diffx/assets/timbre/``.

DDSP timbre transfer (Engel et al., "DDSP: Differentiable Digital Signal Processing", ICLR 2020)
trains one decoder per instrument on monophonic recordings of that instrument, described by their
fundamental frequency and loudness. This script writes such a set for three instruments of the
MIT-licensed Fluid (R3) General MIDI SoundFont: violin (GM program 40), flute (73) and trumpet
(56). For each instrument it composes monophonic phrases (a seeded random walk over a scale
inside the instrument's comfortable range, legato and detached notes, soft to loud velocities
and crescendo/diminuendo ramps on MIDI CC 11), renders them dry with fluidsynth at 48 kHz,
averages to mono, resamples to 16 kHz and writes 16-bit FLAC: by default 8 training, 2
validation and 2 test phrases of about 4.5 s, each split with its own melodies.

All phrases of one instrument share a single gain (the loudest peaks at -1 dBFS), so the level
differences between soft and loud phrases are kept.

Requirements: the same as ``scripts/make_demo_audio.py``, whose helpers this script imports: a
Debian-based system with ``apt-get`` and ``dpkg-deb`` (run ``apt-get update`` once if
``apt-get download`` fails), the ``fluidsynth`` program
(``apt-get install -y --no-install-recommends fluidsynth``), and the Python packages ``mido``,
``numpy``, ``scipy``, ``soundfile`` and ``tqdm``. ``fluid-soundfont-gm`` is fetched with
``apt-get download`` and unpacked into a temporary directory; nothing is installed. The output
is deterministic: every phrase draws its notes from a numpy Generator seeded with
``(SEED, program, split, index)``, so a phrase does not change when more phrases are rendered.

Usage::

    python scripts/make_timbre_data.py                      # writes diffx/assets/timbre/
    python scripts/make_timbre_data.py --out-dir /tmp/timbre --phrases 80 10 10
    python scripts/make_timbre_data.py --instruments flute --seconds-per-phrase 8
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_demo_audio as demo  # noqa: E402  (a sibling script, not an installed module)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "diffx" / "assets" / "timbre"

SOUNDFONT_PACKAGE = "fluid-soundfont-gm"
# 16 kHz is the rate of the DDSP timbre-transfer models; fluidsynth renders at 48 kHz (its
# sample-accurate rate in make_demo_audio) and resample_poly(x, 1, 3) brings it down exactly.
SAMPLE_RATE_HZ = 16000
DOWNSAMPLE = demo.RENDER_RATE_HZ // SAMPLE_RATE_HZ
# The seed of every phrase's Generator; change it (--seed) to draw a different set.
SEED = 20200120
# Split names and their codes in the per-phrase seed. Each split is drawn from its own seeds, so
# validation and test melodies are never training melodies.
SPLITS = {"train": 0, "valid": 1, "test": 2}
DEFAULT_PHRASES = (8, 2, 2)
# 4.5 s rather than 5 s keeps the shipped set (36 files, about 54 s per instrument) near 3 MB of
# FLAC; render longer phrases for your own training with --seconds-per-phrase.
DEFAULT_SECONDS_PER_PHRASE = 4.5

# Silence before the first note-on: models see an onset from silence, as in a recording.
LEAD_IN_SECONDS = 0.2
# Time left after the last note-off for the release to ring (what remains after the -60 dB trim
# of make_demo_audio.trim_trailing_silence); the notes fill the rest of --seconds-per-phrase.
RING_SECONDS = 0.3
# MIDI timing: one beat per second and 1000 ticks per beat, so one tick is one millisecond.
TEMPO_US_PER_BEAT = 1_000_000
TICKS_PER_BEAT = 1000
TICKS_PER_SECOND = TICKS_PER_BEAT * 1_000_000 // TEMPO_US_PER_BEAT

# Sounding note lengths (s): (probability, shortest, longest), drawn log-uniformly within a class.
# The long class gives held notes on which the expression ramps are heard.
LENGTH_CLASSES = ((0.50, 0.15, 0.35), (0.37, 0.35, 0.8), (0.13, 0.8, 1.5))
MIN_NOTE_SECONDS = 0.15
MAX_NOTE_SECONDS = 1.5
# The last note of a phrase is held at least this long (a phrase ends on a long note).
MIN_FINAL_SECONDS = 0.6
# Each phrase draws how often a note is tied legato to the next (the next note-on at this
# note's note-off) from this range; otherwise the note is detached by a short rest.
LEGATO_PROBABILITY = (0.3, 0.85)
DETACHED_REST_SECONDS = (0.04, 0.25)
# Now and then a longer rest, as a player breathes or lifts the bow.
BREATH_PROBABILITY = 0.07
BREATH_REST_SECONDS = (0.3, 0.6)
# Times are rounded to this grid (s) so the MIDI file and the README agree exactly.
TIME_GRID_SECONDS = 0.01

# Velocities: each phrase has a dynamic centre (pp to ff), and the notes wander around it with
# a mean-reverting walk, so loudness differs between phrases and from note to note.
VELOCITY_RANGE = (30, 120)
VELOCITY_CENTRE_RANGE = (40, 110)
VELOCITY_WALK = 0.7  # AR(1) coefficient of the walk around the centre
VELOCITY_STEP = 12.0  # standard deviation of the walk's innovation
ACCENT_PROBABILITY = 0.1
ACCENT_VELOCITY = 15

# Expression (CC 11): FluidR3 uses the SoundFont default modulator, an attenuation of about
# 40 * log10(cc / 127) dB, so 55..127 spans about 14 dB on top of the velocity.
EXPRESSION_RANGE = (55, 127)
# Notes at least this long get a crescendo, diminuendo or swell with this probability; shorter
# notes keep the previous level with a small drift.
RAMP_MIN_SECONDS = 0.4
RAMP_PROBABILITY = 0.75
RAMP_MIN_CHANGE = 20  # CC units between the start and end of a ramp
EXPRESSION_DRIFT = 6.0  # CC units, standard deviation, between short notes
# A ramp is sent as one CC 11 event per this interval (each step a few CC units): fluidsynth
# then follows the curve smoothly instead of jumping.
CC_STEP_SECONDS = 0.02

# Scales for the random walk: semitones above the tonic.
MODES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "natural minor": (0, 2, 3, 5, 7, 8, 10),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Melodic steps in scale degrees and their weights before range and momentum: mostly steps,
# some thirds, fewer fourths to sixths, rare octaves, a few repeated notes.
STEP_WEIGHTS = {
    0: 0.06,
    1: 0.26,
    2: 0.12,
    3: 0.05,
    4: 0.035,
    5: 0.015,
    7: 0.01,
}
# A step in the direction of the previous one is this much more likely: melodies run in lines
# rather than zig-zagging.
MOMENTUM = 1.6
# Outside the instrument's core range a pitch is weighted by OUTSIDE_WEIGHT and a further
# exp(-semitones beyond the core / OUTSIDE_DECAY): the walk visits the extremes but rarely
# stays there. The outer range is never left.
OUTSIDE_WEIGHT = 0.3
OUTSIDE_DECAY = 3.0


@dataclass(frozen=True)
class Instrument:
    """A FluidR3_GM instrument and its ranges (MIDI notes, inclusive)."""

    name: str
    program: int  # General MIDI program, 0-based
    low: int  # the outer range: never left
    high: int
    core_low: int  # where most notes lie
    core_high: int


@dataclass(frozen=True)
class Note:
    pitch: int  # MIDI note
    start: float  # note-on, seconds from the start of the file
    length: float  # seconds from note-on to note-off
    velocity: int


@dataclass(frozen=True)
class Phrase:
    name: str  # file name without .flac, e.g. "train_03"
    instrument: Instrument
    scale: str  # e.g. "D dorian"
    notes: tuple[Note, ...]
    # Breakpoints (seconds, CC 11 value) of a piecewise-linear curve; two points at the same time
    # are a jump (at a note-on).
    expression: tuple[tuple[float, float], ...]


INSTRUMENTS = {
    # violin G3-A6, mostly G4-E6
    "violin": Instrument("violin", 40, 55, 93, 67, 88),
    # flute C4-C7, mostly D5-G6
    "flute": Instrument("flute", 73, 60, 96, 74, 91),
    # trumpet F#3-D6, mostly C4-G5
    "trumpet": Instrument("trumpet", 56, 54, 86, 60, 79),
}


def note_name(pitch: int) -> str:
    """MIDI note to scientific pitch name (60 -> C4)."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def on_grid(seconds: float) -> float:
    return round(round(seconds / TIME_GRID_SECONDS) * TIME_GRID_SECONDS, 6)


def draw_length(rng: np.random.Generator) -> float:
    weights = np.array([c[0] for c in LENGTH_CLASSES])
    _, shortest, longest = LENGTH_CLASSES[rng.choice(len(LENGTH_CLASSES), p=weights)]
    return float(np.exp(rng.uniform(np.log(shortest), np.log(longest))))


def range_weight(instrument: Instrument, pitch: int) -> float:
    beyond = max(instrument.core_low - pitch, pitch - instrument.core_high, 0)
    return 1.0 if beyond == 0 else OUTSIDE_WEIGHT * float(np.exp(-beyond / OUTSIDE_DECAY))


class Walk:
    """A random walk over the notes of one scale inside an instrument's outer range."""

    def __init__(self, instrument: Instrument, rng: np.random.Generator) -> None:
        self.instrument = instrument
        self.rng = rng
        tonic = int(rng.integers(12))
        mode = list(MODES)[rng.integers(len(MODES))]
        self.scale = f"{NOTE_NAMES[tonic]} {mode}"
        degrees = {(tonic + step) % 12 for step in MODES[mode]}
        self.pitches = [p for p in range(instrument.low, instrument.high + 1) if p % 12 in degrees]
        # Start on a note of the tonic triad anywhere in the core range, so that the set of
        # phrases covers the whole core range rather than its middle.
        triad = {(tonic + MODES[mode][degree]) % 12 for degree in (0, 2, 4)}
        starts = [
            i
            for i, p in enumerate(self.pitches)
            if p % 12 in triad and instrument.core_low <= p <= instrument.core_high
        ]
        self.index = starts[rng.integers(len(starts))]
        self.direction = 0

    @property
    def pitch(self) -> int:
        return self.pitches[self.index]

    def step(self, avoid_repeat: bool = False) -> int:
        steps, weights = [], []
        for size, weight in STEP_WEIGHTS.items():
            for step in (size, -size) if size else (0,):
                target = self.index + step
                if not 0 <= target < len(self.pitches) or (avoid_repeat and step == 0):
                    continue
                if step * self.direction > 0:
                    weight *= MOMENTUM
                steps.append(step)
                weights.append(weight * range_weight(self.instrument, self.pitches[target]))
        p = np.array(weights) / sum(weights)
        step = steps[self.rng.choice(len(steps), p=p)]
        self.index += step
        if step != 0:
            self.direction = int(np.sign(step))
        return self.pitch


def expression_ramp(
    rng: np.random.Generator, start: float, length: float, previous: float
) -> list[tuple[float, float]]:
    """Breakpoints of CC 11 over one note from ``start``; ``previous`` is the level before it."""
    low, high = EXPRESSION_RANGE
    if length < RAMP_MIN_SECONDS or rng.random() >= RAMP_PROBABILITY:
        level = float(np.clip(previous + rng.normal(0.0, EXPRESSION_DRIFT), low, high))
        return [(start, level), (start + length, level)]
    shape = rng.choice(["crescendo", "diminuendo", "swell"])
    end = start + length
    if shape == "crescendo":
        first = rng.uniform(low, high - RAMP_MIN_CHANGE)
        return [(start, first), (end, rng.uniform(first + RAMP_MIN_CHANGE, high))]
    if shape == "diminuendo":
        first = rng.uniform(low + RAMP_MIN_CHANGE, high)
        return [(start, first), (end, rng.uniform(low, first - RAMP_MIN_CHANGE))]
    # swell (messa di voce): up to a peak near the middle of the note, then down again
    peak = rng.uniform(low + RAMP_MIN_CHANGE, high)
    middle = on_grid(start + length * rng.uniform(0.35, 0.65))
    return [
        (start, rng.uniform(low, peak - RAMP_MIN_CHANGE)),
        (middle, peak),
        (end, rng.uniform(low, peak - RAMP_MIN_CHANGE)),
    ]


def compose(
    instrument: Instrument, split: str, index: int, seconds: float, seed: int = SEED
) -> Phrase:
    """Compose one phrase of about ``seconds`` (lead-in, notes and release tail)."""
    rng = np.random.default_rng([seed, instrument.program, SPLITS[split], index])
    walk = Walk(instrument, rng)
    legato_probability = rng.uniform(*LEGATO_PROBABILITY)
    v_low, v_high = VELOCITY_RANGE
    centre = rng.uniform(*VELOCITY_CENTRE_RANGE)
    deviation = rng.normal(0.0, VELOCITY_STEP)
    end_of_notes = LEAD_IN_SECONDS + max(
        seconds - LEAD_IN_SECONDS - RING_SECONDS, MIN_FINAL_SECONDS
    )

    notes: list[Note] = []
    expression: list[tuple[float, float]] = [(0.0, float(EXPRESSION_RANGE[1]))]
    time = LEAD_IN_SECONDS
    pitch = walk.pitch
    while True:
        remaining = end_of_notes - time
        final = remaining <= MAX_NOTE_SECONDS
        if final:
            length = on_grid(max(remaining, MIN_FINAL_SECONDS))
        else:
            # Leave room for the final note after this one and its rest.
            room = remaining - MIN_FINAL_SECONDS - DETACHED_REST_SECONDS[1]
            length = on_grid(min(max(draw_length(rng), MIN_NOTE_SECONDS), room))
            length = max(length, MIN_NOTE_SECONDS)
        deviation = VELOCITY_WALK * deviation + rng.normal(0.0, VELOCITY_STEP)
        velocity = centre + deviation
        if rng.random() < ACCENT_PROBABILITY:
            velocity += ACCENT_VELOCITY
        velocity = int(round(np.clip(velocity, v_low, v_high)))
        notes.append(Note(pitch, time, length, velocity))
        previous = expression[-1][1]
        ramp = expression_ramp(rng, time, length, previous)
        expression += [(time, previous)] + [(on_grid(t), v) for t, v in ramp]
        if final:
            break
        # The next pitch; a repeated pitch is never tied (it would merge into one note).
        legato = rng.random() < legato_probability
        pitch = walk.step(avoid_repeat=legato)
        gap = 0.0
        if not legato:
            gap = rng.uniform(*DETACHED_REST_SECONDS)
            if rng.random() < BREATH_PROBABILITY:
                gap = rng.uniform(*BREATH_REST_SECONDS)
        time = on_grid(time + length + gap)
        if end_of_notes - time < MIN_FINAL_SECONDS:  # a breath ate the final note's room
            time = on_grid(end_of_notes - MIN_FINAL_SECONDS)
    return Phrase(f"{split}_{index:02d}", instrument, walk.scale, tuple(notes), tuple(expression))


def expression_events(phrase: Phrase) -> list[tuple[float, int]]:
    """Sample the expression curve every ``CC_STEP_SECONDS``: ``(seconds, CC 11 value)``.

    Repeated values are dropped, so a held level costs no events.
    """
    events: list[tuple[float, int]] = []

    def emit(t: float, value: float) -> None:
        cc = int(round(value))
        if events and events[-1][0] == t:
            events[-1] = (t, cc)
        elif not events or events[-1][1] != cc:
            events.append((t, cc))

    points = phrase.expression
    emit(points[0][0], points[0][1])
    for (t0, v0), (t1, v1) in zip(points[:-1], points[1:]):
        steps = int(np.ceil((t1 - t0) / CC_STEP_SECONDS - 1e-9))
        for k in range(1, steps + 1):
            t = min(t0 + k * CC_STEP_SECONDS, t1)
            emit(round(t, 6), v0 + (v1 - v0) * (t - t0) / (t1 - t0))
        if steps == 0:  # a jump
            emit(t1, v1)
    return events


def write_midi(phrase: Phrase, path: Path) -> None:
    import mido

    # (seconds, order, message): at equal times the note-off comes first, then the expression
    # for the next note, then its note-on (a legato tie is an off and an on at the same tick).
    timed = []
    for note in phrase.notes:
        on = mido.Message("note_on", note=note.pitch, velocity=note.velocity)
        off = mido.Message("note_off", note=note.pitch, velocity=64)
        timed += [(note.start, 2, on), (round(note.start + note.length, 6), 0, off)]
    for t, value in expression_events(phrase):
        timed.append((t, 1, mido.Message("control_change", control=11, value=value)))
    timed.sort(key=lambda item: (item[0], item[1]))

    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=TEMPO_US_PER_BEAT, time=0))
    track.append(mido.Message("program_change", program=phrase.instrument.program, time=0))
    # Full channel volume; the dynamics come from velocity and expression (CC 11).
    track.append(mido.Message("control_change", control=7, value=127, time=0))
    tick = 0
    for t, _, message in timed:
        at = int(round(t * TICKS_PER_SECOND))
        track.append(message.copy(time=at - tick))
        tick = at
    # fluidsynth stops at the end of the file: leave room for the release tail to ring.
    tail = int(round(demo.TAIL_SECONDS * TICKS_PER_SECOND))
    track.append(mido.MetaMessage("end_of_track", time=tail))
    midi = mido.MidiFile(ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(track)
    midi.save(path)


def render(phrase: Phrase, soundfont: Path, work: Path) -> np.ndarray:
    """Render dry at 48 kHz, average to mono, resample to 16 kHz and trim the tail (unscaled)."""
    stem = f"{phrase.instrument.name}_{phrase.name}"
    mid, wav = work / f"{stem}.mid", work / f"{stem}.wav"
    write_midi(phrase, mid)
    # The command of make_demo_audio.render: -R 0 -C 0 turn reverb and chorus off.
    demo.run(
        ["fluidsynth", "-ni", "-q", "-g", str(demo.FLUIDSYNTH_GAIN), "-r", str(demo.RENDER_RATE_HZ)]
        + ["-R", "0", "-C", "0", "-T", "wav", "-O", "float", "-F", str(wav), str(soundfont)]
        + [str(mid)]
    )
    audio, rate = sf.read(wav, dtype="float64", always_2d=True)
    if rate != demo.RENDER_RATE_HZ:
        raise RuntimeError(f"fluidsynth rendered {wav} at {rate} Hz, not {demo.RENDER_RATE_HZ}")
    mono = resample_poly(demo.to_mono(audio), 1, DOWNSAMPLE)
    return demo.trim_trailing_silence(mono, SAMPLE_RATE_HZ)


def fetch_soundfont(work: Path) -> tuple[Path, str]:
    """Download and unpack fluid-soundfont-gm; return the unpacked root and its version."""
    pinned = demo.PACKAGES[SOUNDFONT_PACKAGE]
    pkg_dir = work / SOUNDFONT_PACKAGE
    pkg_dir.mkdir()
    try:
        demo.run(["apt-get", "download", f"{SOUNDFONT_PACKAGE}={pinned}"], cwd=pkg_dir)
    except RuntimeError:
        demo.log(f"warning: {SOUNDFONT_PACKAGE}={pinned} unavailable; using the candidate version")
        try:
            demo.run(["apt-get", "download", SOUNDFONT_PACKAGE], cwd=pkg_dir)
        except RuntimeError as err:
            raise SystemExit(f"{err}\n(run 'apt-get update' once, then try again)") from err
    (deb,) = pkg_dir.glob("*.deb")
    root = work / "root"
    demo.run(["dpkg-deb", "-x", str(deb), str(root)])
    version = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if version != pinned:
        demo.log(f"warning: {SOUNDFONT_PACKAGE} {version} differs from {pinned}")
    return root, version


def write_licence(root: Path, out_dir: Path) -> None:
    """Quote the MIT permission notice from the package's copyright file."""
    text = (root / "usr/share/doc/fluid-soundfont-gm/copyright").read_text()
    last = "OTHER DEALINGS IN THE SOFTWARE."
    notice = text[text.index("Permission is hereby granted") : text.index(last) + len(last)]
    (out_dir / "LICENSE-FluidR3-MIT.txt").write_text(
        "The audio files in the instrument folders here are rendered from the Fluid (R3) General\n"
        "MIDI SoundFont (Debian package fluid-soundfont-gm, FluidR3_GM.sf2), released by its\n"
        "author under the MIT license:\n\n"
        "Copyright (c) 2000-2002, 2008 Frank Wen\n"
        "Copyright (c) 2008 Toby Smithe\n\n"
        + "\n".join(line.strip() for line in notice.splitlines())
        + "\n"
    )


def db(value: float) -> float:
    return float(20 * np.log10(max(value, 1e-12)))


def loudness_spread_db(audio: np.ndarray) -> float:
    """10th to 90th percentile of the 50 ms frame RMS (dB) over frames within 50 dB of the
    loudest: how much the level moves inside a phrase."""
    frame = SAMPLE_RATE_HZ // 20
    frames = audio[: len(audio) // frame * frame].reshape(-1, frame)
    levels = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)
    levels = levels[levels > levels.max() - 50]
    return float(np.percentile(levels, 90) - np.percentile(levels, 10))


def check(path: Path) -> dict:
    """Read a written file back; fail when it is silent, clipped or not 16 kHz 16-bit mono."""
    info = sf.info(path)
    audio, rate = sf.read(path, dtype="float64")
    if rate != SAMPLE_RATE_HZ or info.channels != 1 or info.subtype != "PCM_16":
        raise RuntimeError(f"{path}: {rate} Hz, {info.channels} channel(s), {info.subtype}")
    peak, rms = np.abs(audio).max(), np.sqrt(np.mean(audio**2))
    full_scale = np.count_nonzero(np.abs(audio) >= 32767 / 32768)
    if peak < 10 ** (-40 / 20) or rms < 10 ** (-60 / 20):
        raise RuntimeError(f"{path}: nearly silent (peak {db(peak):.1f}, RMS {db(rms):.1f} dBFS)")
    if full_scale or peak > 10 ** ((demo.TARGET_PEAK_DBFS + 0.01) / 20):
        raise RuntimeError(f"{path}: clipped ({full_scale} full-scale samples)")
    return dict(
        duration=len(audio) / rate,
        peak_db=db(peak),
        rms_db=db(rms),
        spread_db=loudness_spread_db(audio),
    )


def readme(rows: list[dict], args: argparse.Namespace, versions: dict[str, str]) -> str:
    table = [
        "| file | scale | duration (s) | notes | velocity | pitch range | peak (dBFS) "
        "| RMS (dBFS) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['file']} | {r['scale']} | {r['duration']:.2f} | {r['notes']} | "
            f"{r['velocity'][0]}-{r['velocity'][1]} | {note_name(r['pitch'][0])}-"
            f"{note_name(r['pitch'][1])} | {r['peak_db']:.1f} | {r['rms_db']:.1f} |"
        )
    totals = []
    for name in args.instruments:
        seconds = sum(r["duration"] for r in rows if r["file"].startswith(f"{name}/"))
        totals.append(f"{name} {seconds:.1f} s")
    ranges = "\n".join(
        f"| {i.name} | {i.program} | {note_name(i.low)}-{note_name(i.high)} | "
        f"{note_name(i.core_low)}-{note_name(i.core_high)} |"
        for i in (INSTRUMENTS[name] for name in args.instruments)
    )
    train, valid, test = args.phrases
    versions_text = "\n".join(f"- {p} {v}" for p, v in versions.items())
    rests = "-".join(f"{s:g}" for s in DETACHED_REST_SECONDS)
    breaths = "-".join(f"{s:g}" for s in BREATH_REST_SECONDS)
    cc_ms = f"{CC_STEP_SECONDS * 1000:.0f}"
    fade_ms = f"{demo.FADE_OUT_MS:.0f}"
    command = (
        f"fluidsynth -ni -q -g {demo.FLUIDSYNTH_GAIN} -r {demo.RENDER_RATE_HZ} -R 0 -C 0 "
        "-T wav -O float -F phrase.wav FluidR3_GM.sf2 phrase.mid"
    )
    return f"""# Timbre-transfer phrases

Monophonic instrument phrases for training DDSP timbre-transfer models (Engel et al., "DDSP:
Differentiable Digital Signal Processing", ICLR 2020), rendered from the Fluid (R3) GM SoundFont.
One folder per instrument holds {train} training (`train_*.flac`), {valid} validation
(`valid_*.flac`) and {test} test (`test_*.flac`) phrases of about {args.seconds_per_phrase:g} s,
all mono 16-bit FLAC at {SAMPLE_RATE_HZ} Hz. Every phrase is a melody of its own; the validation
and test phrases are drawn from seeds of their own, so they are held-out melodies.

Total per instrument: {", ".join(totals)}.

Built by `scripts/make_timbre_data.py` (seed {args.seed}) from the Debian package
`fluid-soundfont-gm` {versions["fluid-soundfont-gm"]} (fetched with `apt-get download`, unpacked
with `dpkg-deb -x`). Versions used:

{versions_text}

## Rebuilding

    python scripts/make_timbre_data.py

rewrites these files, this README and the licence file. The output is deterministic for the same
versions. For more data of your own, e.g.

    python scripts/make_timbre_data.py --out-dir data/timbre --phrases 200 20 20 \\
        --seconds-per-phrase 8 --instruments violin flute trumpet

(`--phrases TRAIN VALID TEST`. With the same seed and `--seconds-per-phrase`, the first phrases
of a larger set have the melodies shipped here; their level may differ, as the common gain follows
the loudest phrase of the set.)

## How the phrases are made

| instrument | GM program (0-based) | outer range | core range |
|---|---|---|---|
{ranges}

- *melody*: a random walk over a random scale (major, natural or harmonic minor, dorian or
  mixolydian, on a random tonic), starting on a note of the tonic triad anywhere in the core
  range: mostly steps, some thirds, fewer larger leaps, a preference to keep going in the same
  direction. Pitches outside the core range are drawn less often the further out they are; the
  outer range is never left.
- *rhythm*: sounding note lengths of {MIN_NOTE_SECONDS}-{MAX_NOTE_SECONDS} s (short, medium
  and long held notes). Each phrase ties a share of its notes legato (the next note-on at the
  note-off) and detaches the others by a rest of {rests} s, with an occasional breath of
  {breaths} s. Each phrase starts with {LEAD_IN_SECONDS} s of silence and ends on a held note
  whose release rings out.
- *dynamics*: each phrase has a dynamic level between pp and ff, and note velocities wander
  around it ({VELOCITY_RANGE[0]}-{VELOCITY_RANGE[1]} in all, with some accents). On top of
  that, expression (MIDI CC 11, {EXPRESSION_RANGE[0]}-{EXPRESSION_RANGE[1]}) makes crescendos,
  diminuendos and swells inside held notes, sent as one small CC step every {cc_ms} ms, so the
  loudness moves within notes as well as between notes and phrases.
- *render*: dry (no reverb, no chorus) with

      {command}

  The stereo float output is averaged to mono, resampled from {demo.RENDER_RATE_HZ} Hz to
  {SAMPLE_RATE_HZ} Hz with `scipy.signal.resample_poly(x, 1, {DOWNSAMPLE})` and kept up to
  {fade_ms} ms after its last sample above {demo.SILENCE_THRESHOLD_DB:.0f} dB of the phrase's
  peak (those last {fade_ms} ms fade out with a raised cosine).
- *level*: all phrases of an instrument are scaled by one common gain, so that the loudest
  phrase of the instrument peaks at {demo.TARGET_PEAK_DBFS:.0f} dBFS; the level differences
  between phrases are kept (phrases are not normalized one by one). Then rounded to 16 bit (no
  dither).

{chr(10).join(table)}

Pitch names follow scientific pitch notation (MIDI 60 = C4).

## Licence

Rendered from the Fluid (R3) GM SoundFont (Debian `fluid-soundfont-gm`, `FluidR3_GM.sf2`),
**MIT**, Copyright 2000-2002, 2008 Frank Wen, 2008 Toby Smithe. See `LICENSE-FluidR3-MIT.txt`.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument(
        "--instruments", nargs="+", choices=list(INSTRUMENTS), default=list(INSTRUMENTS)
    )
    parser.add_argument(
        "--seconds-per-phrase",
        type=float,
        default=DEFAULT_SECONDS_PER_PHRASE,
        help="approximate length of each phrase, lead-in and release tail included",
    )
    parser.add_argument(
        "--phrases",
        type=int,
        nargs=3,
        metavar=("TRAIN", "VALID", "TEST"),
        default=list(DEFAULT_PHRASES),
        help="number of phrases per instrument in each split (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    if min(args.phrases) < 0 or sum(args.phrases) == 0:
        parser.error("--phrases needs non-negative counts, not all zero")
    if args.seconds_per_phrase < LEAD_IN_SECONDS + MIN_FINAL_SECONDS + RING_SECONDS:
        parser.error("--seconds-per-phrase is too short for even one note")
    demo.check_tools()
    out_dir: Path = args.out_dir
    fluidsynth_version = subprocess.run(
        ["fluidsynth", "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    fluidsynth_version = fluidsynth_version.replace("FluidSynth runtime version", "").strip()

    jobs = [
        (INSTRUMENTS[name], split, index)
        for name in args.instruments
        for split, count in zip(SPLITS, args.phrases)
        for index in range(count)
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="diffx_timbre_") as tmp:
        work = Path(tmp)
        root, package_version = fetch_soundfont(work)
        soundfont = root / demo.SOUNDFONT
        rendered: dict[str, list[tuple[Phrase, np.ndarray]]] = {}
        for instrument, split, index in tqdm(jobs, desc="renders", unit="phrase"):
            phrase = compose(instrument, split, index, args.seconds_per_phrase, args.seed)
            audio = render(phrase, soundfont, work)
            rendered.setdefault(instrument.name, []).append((phrase, audio))
        out_dir.mkdir(parents=True, exist_ok=True)
        write_licence(root, out_dir)

    for name, items in rendered.items():
        # One gain per instrument: the loudest phrase peaks at TARGET_PEAK_DBFS.
        gain = 10 ** (demo.TARGET_PEAK_DBFS / 20) / max(np.abs(a).max() for _, a in items)
        folder = out_dir / name
        folder.mkdir(exist_ok=True)
        for phrase, audio in items:
            path = folder / f"{phrase.name}.flac"
            demo.write_flac(path, audio * gain, SAMPLE_RATE_HZ)
            stats = check(path)
            pitches = [n.pitch for n in phrase.notes]
            velocities = [n.velocity for n in phrase.notes]
            rows.append(
                dict(
                    file=f"{name}/{phrase.name}.flac",
                    scale=phrase.scale,
                    notes=len(phrase.notes),
                    velocity=(min(velocities), max(velocities)),
                    pitch=(min(pitches), max(pitches)),
                    **stats,
                )
            )
            demo.log(
                f"{name}/{phrase.name}.flac: {stats['duration']:.2f} s, peak "
                f"{stats['peak_db']:.1f} dBFS, RMS {stats['rms_db']:.1f} dBFS, level spread "
                f"{stats['spread_db']:.1f} dB, {len(pitches)} notes, velocity "
                f"{min(velocities)}-{max(velocities)}, {note_name(min(pitches))}-"
                f"{note_name(max(pitches))}"
            )

    versions = {
        "fluid-soundfont-gm": package_version,
        "FluidSynth": fluidsynth_version,
        **{p: importlib.metadata.version(p) for p in ("numpy", "scipy", "mido", "soundfile")},
        "libsndfile": sf.__libsndfile_version__,
    }
    (out_dir / "README.md").write_text(readme(rows, args, versions))
    for name in rendered:
        seconds = sum(r["duration"] for r in rows if r["file"].startswith(f"{name}/"))
        demo.log(f"{name}: {seconds:.1f} s in {len(rendered[name])} phrases")
    total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    demo.log(f"wrote {len(rows)} audio files to {out_dir} ({total / 1e6:.2f} MB in all)")


if __name__ == "__main__":
    main()
