"""The ``rrlmedsam`` command line.

Each sub-command lives in ``RRLMedSAMLib/commands/<name>.py``. User errors (:class:`InputError`)
become one line on stderr and exit code 2; Ctrl-C / SIGTERM become exit code 130 with checkpoints
intact; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import signal
import sys
from types import ModuleType

from RRLMedSAMLib import __version__
from RRLMedSAMLib.errors import CancelledError, InputError

#: Sub-command -> (module in RRLMedSAMLib.commands, one-line help). Only the module of the command
#: being run is imported, so ``--help`` and argument errors answer without loading torch.
COMMANDS = {
    "train": ("train", "Train on one annotated atlas plus unlabelled scans; writes a run folder for 'segment'."),
    "segment": ("segment", "Segment scans with a trained run: segmentation, deformation field, warped atlas, QC per scan."),
    "evaluate": ("evaluate", "Score predicted labelmaps against reference labels: Dice and HD95 per label."),
    "make-brain-dataset": ("make_brain_dataset", "Build a T1-like brain dataset (synthetic contrast, real anatomy) from label maps."),
    "demo": ("demo", "Run the one-shot demo on the embedded sample data (train, segment, evaluate, report)."),
    "bench": ("bench", "Run methods side by side on a dataset folder: accuracy, speed and memory."),
}

EXIT_INPUT_ERROR = 2
EXIT_CANCELLED = 130


def _load(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"RRLMedSAMLib.commands.{module_name}")
    except ModuleNotFoundError as error:
        if error.name == f"RRLMedSAMLib.commands.{module_name}":
            return None
        raise


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only ``selected``'s module is imported (none when ``None``)."""
    parser = argparse.ArgumentParser(
        prog="rrlmedsam",
        description="One-shot 3D segmentation: learn from one annotated atlas, segment scans of the same kind.",
    )
    parser.add_argument("--version", action="version", version=f"rrlmedsam {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, (module_name, summary) in COMMANDS.items():
        if importlib.util.find_spec(f"RRLMedSAMLib.commands.{module_name}") is None:
            continue
        if command != selected:
            subparsers.add_parser(command, help=summary, description=summary)
            continue
        module = _load(module_name)
        if module is None:
            continue
        sub = subparsers.add_parser(command, help=summary, description=module.__doc__ or summary)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def _raise_cancel(signum: int, frame: object) -> None:
    raise CancelledError(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the sub-command; return the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_INPUT_ERROR
    signal.signal(signal.SIGTERM, _raise_cancel)
    try:
        return int(args.handler(args) or 0)
    except InputError as error:
        print(f"rrlmedsam {args.command}: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except (KeyboardInterrupt, CancelledError):
        print(f"rrlmedsam {args.command}: interrupted; resume training with --resume.", file=sys.stderr)
        return EXIT_CANCELLED


if __name__ == "__main__":
    sys.exit(main())
