"""The ``napari-vessel`` command line.

Each subcommand lives in its own module in :mod:`napari_vessel.commands` and provides ``NAME``,
``HELP`` (one line), ``DESCRIPTION`` (a paragraph with an example), ``add_arguments(parser)`` and
``run(args) -> int``. User mistakes raise :class:`~napari_vessel.errors.InputError`; they are printed
as one ``error:`` line (no traceback) and the exit code is 2. A cancelled run exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from napari_vessel import __version__
from napari_vessel.errors import Cancelled, InputError

__all__ = ["main", "build_parser", "COMMANDS"]

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = (
    "demo",
    "info",
    "data",
    "preprocess",
    "segment",
    "batch",
    "evaluate",
    "graph",
    "benchmark",
    "models",
    "train",
    "finetune",
)

_EPILOG = """\
examples:
  napari-vessel demo --out demo_out          segment the built-in sample, write TIFFs and a PNG
  napari-vessel info stack.tif               what a file holds: shape, dtype, channels, voxel size
  napari-vessel data --dest ~/vesselnn       download the public VesselNN volumes (hash-checked)
  napari-vessel segment stack.tif -o out     segment your stack with the recommended model
  napari-vessel batch data/ -o out           segment every stack of a folder on a dask cluster
  napari-vessel models                       the models you can use, with their scores
  napari-vessel benchmark --data DIR         compare every model on your annotated stacks
  napari-vessel finetune stack.tif --model tvnet -o tvnet-mine
                                             adapt a model to your microscope (no labels needed)

run 'napari-vessel COMMAND --help' for the options of one command.
"""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the argument parser with every available subcommand (or only the one named
    ``only``: a command imports only what it needs, so its start is not slowed by the others)."""
    parser = argparse.ArgumentParser(
        prog="napari-vessel",
        description=(
            "Segment blood vessels in 3D two-photon and confocal microscopy stacks, from the "
            "command line or in napari (open napari and use Plugins > napari-vessel)."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"napari-vessel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS if only is None else (only,):
        module = importlib.import_module(f"napari_vessel.commands.{name}")
        cmd = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except InputError as err:
        print(f"napari-vessel {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"napari-vessel {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, read-only folder, permissions: one clear line
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"napari-vessel {args.command}: error: the system refused a file operation: "
              f"{err.strerror or err}{where}; free some space or choose a folder you can write "
              "to, then run it again (earlier results were left as they were)", file=sys.stderr)
        return 1
    except Cancelled:
        print(f"napari-vessel {args.command}: cancelled; nothing was written", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"napari-vessel {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
