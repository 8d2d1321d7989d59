"""The ``rrlmedsam`` command line.

Each sub-command lives in ``RRLMedSAMLib/commands/<name>.py``. User errors (:class:`InputError`)
become one line on stderr and exit code 2; Ctrl-C / SIGTERM / the stop file become exit code 130
with checkpoints intact; anything else is a bug: one line on stderr naming a log file that holds
the full traceback, and exit code 1. A user never sees a raw traceback.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
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
    "summarize": ("summarize", "Assemble cohort.csv from the shard summaries of 'segment --image-list' in an output folder."),
}

EXIT_INTERNAL_ERROR = 1
EXIT_INPUT_ERROR = 2
EXIT_CANCELLED = 130

#: What an interrupted command tells the user (default: :data:`INTERRUPTED_DEFAULT`).
INTERRUPTED_MESSAGES = {
    "train": "interrupted; the last checkpoint is kept: resume training with --resume and the same --out.",
    "segment": "interrupted; segmentation stopped. Results of the scans already finished are kept; run segment "
               "again for the others.",
    "bench": "interrupted; finished results are kept.",
}
INTERRUPTED_DEFAULT = "interrupted; nothing more was written."
#: Environment variable naming the folder for internal-error logs (default: the system's temporary folder).
LOG_DIR_ENV = "RRLMEDSAM_LOG_DIR"


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


def main(argv: list[str] | None = None, handler: Callable[[argparse.Namespace], int] | None = None) -> int:
    """Parse ``argv`` and run the sub-command; return the process exit code.

    ``handler`` replaces the sub-command's own ``run`` (same parsing, messages and exit codes; the
    benchmark's stage sharing trains this way).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_INPUT_ERROR
    signal.signal(signal.SIGTERM, _raise_cancel)
    try:
        return int((handler or args.handler)(args) or 0)
    except InputError as error:
        print(f"rrlmedsam {args.command}: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except (KeyboardInterrupt, CancelledError):
        print(f"rrlmedsam {args.command}: {INTERRUPTED_MESSAGES.get(args.command, INTERRUPTED_DEFAULT)}", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as error:  # the last resort: a bug, reported in one line with its traceback in a log file
        log = _write_traceback_log(args.command, argv)
        summary = " ".join(str(error).split())[:300] or "no message"
        where = f"full traceback in {log}" if log else "the traceback could not be saved"
        print(f"rrlmedsam {args.command}: internal error: {type(error).__name__}: {summary} ({where}; please report "
              "it).", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


def _write_traceback_log(command: str, argv: list[str]) -> Path | None:
    """Write the current exception's traceback to a new log file; return its path (``None`` if impossible)."""
    folder = Path(os.environ.get(LOG_DIR_ENV) or tempfile.gettempdir())
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f"rrlmedsam-{command}-{stamp}-", suffix=".log", dir=folder)
        with os.fdopen(handle, "w", encoding="utf-8") as log:
            log.write(f"rrlmedsam {' '.join(argv)}\n\n{traceback.format_exc()}")
    except OSError:
        return None
    return Path(name)


if __name__ == "__main__":
    sys.exit(main())
