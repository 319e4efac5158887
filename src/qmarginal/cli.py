"""The ``qmarginal`` command line: it parses, reads and writes files, and calls the library.

Subcommands live in small modules that each define ``add_commands(subparsers)``; every handler
is ``handler(args) -> int`` (the exit status). Every error is printed as one line on stderr,
``qmarginal COMMAND: error: ...``, never as a traceback. Exit status (the README's table):

- 0: success (a certified state; ``check``: compatible; approximate methods: produced);
- 1: incompatible, with a verified certificate;
- 2: bad input or usage: an unreadable or malformed file, an invalid option or value, an
  output that cannot or may not be written, a request that cannot fit in memory, a missing
  optional dependency, an operating-system error on a file (argparse's own usage errors too);
- 3: not certified / undetermined (no certified state and no verified certificate);
- 4: ``check --unique``: not unique (two certified states);
- 130: interrupted (Ctrl-C); files being written are left as they were (atomic writes).
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from .errors import IncompatibleMarginalsError, MarginalError, NotCertifiedError

#: modules that contribute subcommands, imported when the parser is built (keep them light:
#: heavy libraries are imported inside the handlers).
COMMAND_MODULES = [
    "qmarginal._cli_core",
    "qmarginal._cli_solve",
    "qmarginal.learn._cli",
    "qmarginal.evaluation._cli",
]


def get_args_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="qmarginal",
        description="Reconstruct density matrices from quantum marginals.",
    )
    parser.add_argument("--version", action="version", version=f"qmarginal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except IncompatibleMarginalsError as exc:
        print(f"qmarginal {args.command}: incompatible (certificate verified): {exc}",
              file=sys.stderr)
        return 1
    except NotCertifiedError as exc:
        print(f"qmarginal {args.command}: not certified: {exc}", file=sys.stderr)
        return 3
    except MarginalError as exc:
        print(f"qmarginal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"qmarginal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"qmarginal {args.command}: error: out of memory (the memory plan did not foresee "
              "this; please report it with the problem's size)", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"qmarginal {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qmarginal {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
