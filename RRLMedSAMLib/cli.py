"""The ``rrlmedsam`` command line.

Each sub-command lives in ``RRLMedSAMLib/commands/<name>.py``. User errors (:class:`InputError`)
become one line on stderr and exit code 2; Ctrl-C / SIGTERM become exit code 130 with checkpoints
intact; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from types import ModuleType

from RRLMedSAMLib import __version__
from RRLMedSAMLib.errors import CancelledError, InputError

COMMANDS = {
    "train": "train",
    "segment": "segment",
    "evaluate": "evaluate",
    "make-brain-dataset": "make_brain_dataset",
    "demo": "demo",
    "bench": "bench",
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="rrlmedsam",
        description="One-shot 3D segmentation: learn from one annotated atlas, segment scans of the same kind.",
    )
    parser.add_argument("--version", action="version", version=f"rrlmedsam {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, module_name in COMMANDS.items():
        module = _load(module_name)
        if module is None:
            continue
        sub = subparsers.add_parser(command, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def _raise_cancel(signum: int, frame: object) -> None:
    raise CancelledError(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the sub-command; return the process exit code."""
    parser = build_parser()
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
