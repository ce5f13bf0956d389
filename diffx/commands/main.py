"""The ``diffx`` console script: one command per module of :mod:`diffx.commands`.

``diffx --help`` lists them (:data:`COMMANDS`); ``diffx <command> --help`` gives each one's
options. Every command follows one front-end convention (:mod:`diffx.commands._frontend`): a
user's mistake is one line on stderr naming the culprit and exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

from diffx import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("train", "train a task from a YAML config (add --ckpt_path last to resume)"),
    "validate": ("train", "run a task's validation metrics on a checkpoint (--ckpt_path)"),
    "test": ("train", "run a task's test metrics on a checkpoint (--ckpt_path)"),
    "predict": ("train", "process audio with a trained task"),
    "demo": ("demo", "run the core effects on the shipped demo audio; write audio and plots"),
    "align": ("align", "phase-align a dry recording to a processed one (allpass filters)"),
    "stylize": ("stylize", "process a recording in the style of a reference (trained model)"),
    "timbre": ("timbre", "play a recording's melody on a trained DDSP instrument"),
    "postfilter": ("postfilter", "make feature pairs and GV statistics; merge and apply "
                   "post-filters"),  # fmt: skip
}
"""Command name -> (module in :mod:`diffx.commands`, one line of help)."""

USAGE = (
    "usage: diffx {fit,validate,test,predict} --config CONFIG.yaml [--key value ...]\n"
    "       diffx demo [--out DIR] [--seconds S]\n"
    "       diffx align --dry DRY.wav --wet WET.wav --out ALIGNED.wav [options]\n"
    "       diffx stylize --input IN.wav --reference REF.wav --ckpt MODEL.ckpt --out OUT.wav\n"
    "       diffx timbre --input IN.wav --ckpt MODEL.ckpt --out OUT.wav [options]\n"
    "       diffx postfilter {pairs,gv,merge,apply} ..."
)


def usage() -> str:
    """The text of ``diffx --help``: the forms, then every command with one line."""
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return (
        f"diffx {__version__}\n\n{USAGE}\n\n" + "\n".join(lines) + "\n\n"
        "`diffx <command> --help` lists a command's options; configs live in configs/<task>/."
    )


def main(argv: list[str] | None = None) -> int:
    """Run ``diffx ARGV``; returns the exit status (0, or 2 for a user's mistake)."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"diffx {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        known = ", ".join(COMMANDS)
        print(f"diffx: error: unknown command {argv[0]!r}; the commands are {known} "
              "(see diffx --help)", file=sys.stderr)  # fmt: skip
        return 2
    # Imported on demand, so that `diffx --help` and the light commands start fast.
    module = importlib.import_module(f"diffx.commands.{COMMANDS[argv[0]][0]}")
    if module.__name__ == "diffx.commands.train":
        return module.main(argv, from_command_line=from_command_line)
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
