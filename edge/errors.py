"""Errors that tell the user what went wrong, what was expected and what to do."""

from __future__ import annotations

import sys
from collections.abc import Callable


class EdgeError(Exception):
    """Base of every error the toolkit reports to a user.

    ``what`` says what was wrong (with the received value), ``fix`` what to do
    next. Command-line front ends print ``str(err)`` and exit with ``exit_code``.
    """

    exit_code = 2

    def __init__(self, what: str, fix: str = "") -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what}\n  fix: {fix}" if fix else what)


class ModelLoadError(EdgeError):
    """The model file cannot be loaded by the chosen runtime/delegate."""


class RuntimeNotFoundError(EdgeError):
    """No usable TFLite runtime is installed (or the requested one is missing)."""


class DelegateError(EdgeError):
    """A hardware delegate (e.g. the Edge TPU) could not be loaded."""


class InputError(EdgeError):
    """An input (image, tensor, file) cannot be turned into the model's input."""


def run_command(prog: str, body: Callable[[], int]) -> int:
    """Run a command-line tool's body the same way for every tool: an :class:`EdgeError` is printed
    as ``prog: error: what / fix`` and becomes its exit code; Ctrl-C exits 130 without a traceback;
    any other exception is a bug: its traceback, a line saying so, exit 1."""
    try:
        return body()
    except EdgeError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        import traceback

        traceback.print_exc()
        print(f"{prog}: internal error (a bug): please report it with the traceback above", file=sys.stderr)
        return 1
