"""The ``airgap`` command.  Parses arguments and calls the library; nothing else.

Exit codes, for every verb: 0 accepted / done, 1 rejected or failed, 2 usage or
unreadable input.  ``--json`` prints one JSON document on stdout; human output
goes to stdout, progress bars and errors to stderr.

Each verb is one ``add_<verb>`` function (its options) and one ``cmd_<verb>``
function (one library call, then printing) in the module of its group:
``_keys``, ``_bundle`` (the connected side), ``_receive`` (the receiving side),
``_policy`` (trust policies and toolkit releases), ``_audit``, ``_lab``.  Only
the module of the verb being run is imported and only its parser is built.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import TYPE_CHECKING

from airgap import __version__
from airgap._internal.fsutil import os_error
from airgap.cli._base import DEBUG_HELP, Parser, close_keys, key_options, print_notes, report_error
from airgap.exceptions import AirgapError

if TYPE_CHECKING:
    import logging

__all__ = ["VERBS", "build_parser", "main", "report_error"]

# verb -> the module (airgap.cli.<module>) whose add_<verb> builds its parser, in the order help lists them
VERBS: dict[str, str] = {
    "keygen": "_keys", "key": "_keys", "build": "_bundle", "inspect": "_bundle", "diff": "_bundle",
    "sign": "_bundle", "unsign": "_bundle", "verify": "_receive", "trust": "_policy", "toolkit": "_policy",
    "import": "_receive", "split": "_bundle", "join": "_receive", "extract": "_receive", "transfer": "_bundle",
    "audit": "_audit", "inventory": "_bundle", "manifests": "_receive", "packages": "_receive", "lab": "_lab",
}
_key_options = key_options  # the name tests and older callers use


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (*verb*, one of :data:`VERBS`) one with only that verb (see :func:`main`)."""
    parser = Parser(prog="airgap", description="Signed offline bundles for isolated networks.",
                    epilog="Every verb exits 0 when done or accepted, 1 when rejected or when an operation failed "
                           "(disk, network), 2 on a usage or input error. 'airgap VERB --help' names its cases.")
    parser.add_argument("--version", action="version", version=f"airgap {__version__}", help="print the version and exit")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in [verb] if verb is not None else VERBS:
        module = importlib.import_module(f"airgap.cli.{VERBS[name]}")
        getattr(module, f"add_{name}")(sub)
    return parser


def _all_verbs(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(verb words, its parser) for every verb, e.g. (("trust", "init"), parser): what tests walk."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    yield from _all_verbs(sub, (*prefix, name))
                else:
                    yield (*prefix, name), sub


def _verb(args) -> str:
    sub = next((v for k, v in vars(args).items() if k.endswith("_command") and v), None)
    return f"{args.command} {sub}" if sub else args.command


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verb = next((a for a in argv if not a.startswith("-")), None)
    # Only the verb being run is built (start-up time); help, --version and a
    # mistyped verb get the whole parser, which lists every verb.
    args = build_parser(verb if verb in VERBS else None).parse_args(argv)
    debug_log = _debug_log(args.debug)
    # --debug (or AIRGAP_DEBUG=1) also shows the traceback of an internal error.
    debug = args.debug or os.environ.get("AIRGAP_DEBUG", "") not in ("", "0")
    if hasattr(sys.stdout, "reconfigure"):
        # A name that is not UTF-8 (a surrogate escape) is printed escaped, never a crash.
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        key_options(args)  # a misplaced --passphrase-file / --pin-file is a usage error before any work
        return int(args.func(args) or 0)
    except AirgapError as exc:
        return report_error(args, exc)
    except KeyboardInterrupt:
        print("airgap: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:
        # The library turns the OSErrors it expects into AirgapErrors (a test holds it
        # to that); anything else still gets the same codes: a path to fix (2) or a
        # failed operation such as a full disk (1).
        if debug:
            import traceback

            traceback.print_exc()
        return report_error(args, os_error(exc))
    except Exception as exc:  # noqa: BLE001 - no traceback reaches a user
        if debug:
            import traceback

            traceback.print_exc()
        print(f"airgap {_verb(args)}: internal error ({type(exc).__name__}: {exc}); nothing more was done. "
              "Rerun with --debug (or AIRGAP_DEBUG=1) to see where, and report it.", file=sys.stderr)
        print_notes(exc)
        return 1
    finally:
        close_keys()
        if debug_log is not None:
            import logging

            logger = logging.getLogger("airgap")
            logger.removeHandler(debug_log)
            logger.setLevel(logging.NOTSET)


def _debug_log(on: bool) -> logging.Handler | None:
    """``--debug``: the library's debug log (``airgap.*`` loggers) on stderr, for this run only."""
    if not on:
        return None
    import logging  # only with --debug: it costs every other run start-up time

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("airgap: debug: %(message)s"))
    logger = logging.getLogger("airgap")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return handler
