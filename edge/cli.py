"""What every command-line tool shares: a parser with ``--version`` whose ``--help`` shows each option's
default, and the one place that decides whether output may be coloured (``NO_COLOR``).

Errors and Ctrl-C go through :func:`edge.errors.run_command`. The device agent imports this module,
so it stays as light as argparse itself (no ``shutil``: see :class:`HelpFormatter`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

import edge


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks; every option with a default says ``(default: X)``."""

    def __init__(self, prog: str, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("width") is None and len(args) < 3:
            # argparse's own width comes from `import shutil`, which drags bz2 and lzma (~0.7 MB)
            # into the agent; the terminal size is one os call away.
            kwargs["width"] = _terminal_columns() - 2
        super().__init__(prog, *args, **kwargs)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default is None
            or default is argparse.SUPPRESS
            or action.nargs == 0  # flags (store_true, ...): off unless given
            or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))
        ):
            return action.help
        if isinstance(default, (list, tuple)) and not default:
            return action.help
        shown = ", ".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})" if text else f"default: {shown}"


def _terminal_columns() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno() if sys.__stdout__ else 1).columns
    except (OSError, ValueError):
        return 80


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help uses :class:`HelpFormatter`, sub-commands' too (``add_parser``
    builds sub-parsers of the parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        """argparse's, except that an unknown option names the nearest valid one, and the error comes
        from the sub-command that was given (its usage line, not the tool's)."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            where = self._chosen_subparser(ns)
            message = f"unrecognized arguments: {' '.join(extras)}"
            hints = where._nearest_options(extras)
            if len(hints) == 1:
                message += f" (did you mean {hints[0][1]}?)"
            elif hints:
                message += f" (did you mean {', '.join(f'{near} for {arg}' for arg, near in hints)}?)"
            where.error(message)
        return ns

    def _chosen_subparser(self, ns: argparse.Namespace) -> Parser:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and action.dest != argparse.SUPPRESS:
                sub = action.choices.get(str(getattr(ns, action.dest, "")))
                if isinstance(sub, Parser):
                    return sub._chosen_subparser(ns)
        return self

    def _nearest_options(self, extras: list[str]) -> list[tuple[str, str]]:
        """(unknown option, the nearest known one) for each unknown ``--option`` that is near one."""
        import difflib  # only on this error path: the agent imports this module

        known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        hints = []
        for arg in extras:
            name = arg.split("=", 1)[0]
            near = difflib.get_close_matches(name, known, n=1, cutoff=0.6) if name.startswith("--") else []
            hints += [(name, near[0])] if near else []
        return hints


def parser(prog: str, description: str | None = None, **kwargs: Any) -> Parser:
    """The parser of a command-line tool: the shared help format and ``--version``."""
    p = Parser(prog=prog, description=description, **kwargs)
    p.add_argument("--version", action="version", version=f"{prog} {edge.__version__}")
    return p


def use_color(stream: TextIO, *, tty: bool | None = None) -> bool:
    """May ``stream`` get colour escapes? Only a terminal (``tty`` overrides the check), and never when
    the ``NO_COLOR`` environment variable is set and not empty (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    if tty is not None:
        return tty
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
