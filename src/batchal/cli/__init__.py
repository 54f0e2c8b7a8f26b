"""The command line: one module per command, assembled here.

``batchal run``, ``compare``, ``report``, ``score``, ``select``, ``label``, ``label-studio``, ``strategies`` and
``datasets``; each module holds its parser (``add_parser``) and its body. Progress bars and the
results table live in ``batchal.cli.progress``. Global options (``--threads``) are accepted before
or after the subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import Optional

from batchal import __version__

#: The commands' modules (batchal.cli.NAME), in the order `batchal --help` lists them; imported
#: when the parser is built, so that `batchal --version` answers without importing PyTorch.
COMMANDS = ("run", "compare", "score", "select", "datasets", "strategies", "report", "label", "label_studio")


def _global_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand's parser leaves a value given before the subcommand in place.
    parser.add_argument("--threads", default=argparse.SUPPRESS,
                        help="CPU threads per process: a number or auto (one per core); default $BATCHAL_THREADS, else 1 "
                        "(fastest on a busy machine; with the same thread count the same seed gives the same numbers on one machine)")


def _leaves(parser: argparse.ArgumentParser):
    """Every parser under ``parser`` that runs a command (the subcommands' own parsers)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share one parser
                has_children = any(isinstance(a, argparse._SubParsersAction) for a in child._actions)
                yield from _leaves(child) if has_children else [child]


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line's parser: every command's, or with ``only`` (a command's module name) that
    command's in full and the others as their one-line summaries, so that ``batchal --help`` and
    ``batchal run ...`` import only what they use (``batchal --help`` no PyTorch at all)."""
    from batchal.cli.summaries import SUMMARIES

    parser = argparse.ArgumentParser(prog="batchal", description="Deep Bayesian batch active learning (BatchBALD, BADGE and baselines).")
    parser.add_argument("--version", action="version", version=f"batchal {__version__}")
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        if only is None or command == only:
            importlib.import_module(f"batchal.cli.{command}").add_parser(sub)
        else:
            sub.add_parser(command.replace("_", "-"), help=SUMMARIES[command.replace("_", "-")])
    for leaf in _leaves(parser):
        _global_options(leaf)
    return parser


def _requested(given: list[str]) -> Optional[str]:
    """The command module ``given`` names (its first word that is not an option or --threads' value),
    "" when it names none (``batchal --help``), None when it names an unknown one (the full parser says so)."""
    words = iter(given)
    for word in words:
        if word == "--threads":
            next(words, None)
        elif not word.startswith("-"):
            module = word.replace("-", "_")
            return module if module in COMMANDS else None
    return ""


def main(argv: Optional[list[str]] = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given == ["--version"]:  # before the commands (and PyTorch) are imported
        print(f"batchal {__version__}")
        return 0
    requested = _requested(given)
    parser = build_parser(None if requested is None else requested)
    args = parser.parse_args(given)  # --help and parse errors end here, before PyTorch is imported
    from batchal.cli.progress import one_line_warning
    from batchal.data.files import DataError
    from batchal.threads import use_threads

    try:
        use_threads(getattr(args, "threads", None))
    except ValueError as exc:
        print(f"batchal: error: --threads: {exc}", file=sys.stderr)
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("once")
        warnings.showwarning = one_line_warning
        try:
            return args.func(args)
        except (ValueError, DataError, FileNotFoundError, FileExistsError) as exc:
            print(f"batchal: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("batchal: interrupted; run the same command again to resume from the last complete round", file=sys.stderr)
            return 130
