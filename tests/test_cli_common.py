"""What every command-line tool shares (edge.cli, edge.errors.run_command): ``--version``, defaults in
``--help``, the error/interrupt/bug exits, and NO_COLOR."""

from __future__ import annotations

import importlib
import io
import re
import sys
from collections.abc import Callable

import pytest

import edge
from edge.cli import use_color
from edge.errors import EdgeError, run_command
from edge.watch.table import LiveTable
from tests.support import ROOT
from tests.support.process import run_python

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

# Per tool: the help to print, an option in it and the default its help must show. The agent's help is
# helper "config"'s (edge/agent/cli.py).
DEFAULT_SHOWN = {
    "edge-convert": (["--help"], "--eval-split", "(default: 0.2)"),
    "edge-bench": (["--help"], "--tolerance", "(default: 0.3)"),
    "edge-flash": (["sd", "--help"], "--wifi-country", "(default: GB)"),
    "edge-watch": (["--help"], "--sse-seconds", "(default: 60.0)"),
    "edge-demo": (["--help"], "--broker-kind", "(default: auto)"),
    "edge-fleet": (["ls", "--help"], "--settle", "(default: 0.5)"),
}


def _main(script: str) -> Callable[[list[str]], int]:
    module, _, func = SCRIPTS[script].partition(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


def _exit(main: Callable[[list[str]], int], argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out: str = capsys.readouterr().out
    return out


def test_every_console_script_is_listed_here() -> None:
    assert set(SCRIPTS) == {*DEFAULT_SHOWN, "edge-agent"}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_version(script: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit(_main(script), ["--version"], capsys) == f"{script} {edge.__version__}\n"


def _option_help(text: str, option: str) -> str:
    """The option's help, which starts on its line or, after a long metavar, on the next one."""
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith(option))
    return " ".join(ln.strip() for ln in lines[i : i + 2])


@pytest.mark.parametrize("script", sorted(DEFAULT_SHOWN))
def test_help_shows_defaults(
    script: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside a help text
    argv, option, shown = DEFAULT_SHOWN[script]
    text = _exit(_main(script), argv, capsys)
    assert shown in _option_help(text, option), text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_ota_sub_commands_show_defaults(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    flash = _main("edge-flash")
    keygen = _exit(flash, ["keygen", "--help"], capsys)
    assert "(default: edge-update.key)" in _option_help(keygen, "--out"), keygen
    push = _exit(flash, ["push-model", "--help"], capsys)
    assert "(default: 120.0)" in _option_help(push, "--timeout"), push


def test_run_command_exits(capsys: pytest.CaptureFixture[str]) -> None:
    def bad_input() -> int:
        raise EdgeError("--x must be positive, got -1", "pass --x 1")

    def interrupted() -> int:
        raise KeyboardInterrupt

    def bug() -> int:
        raise ZeroDivisionError("boom")

    assert run_command("edge-x", lambda: 3) == 3
    assert run_command("edge-x", bad_input) == 2
    assert capsys.readouterr().err == "edge-x: error: --x must be positive, got -1\n  fix: pass --x 1\n"
    assert run_command("edge-x", interrupted) == 130
    assert capsys.readouterr().err == "edge-x: interrupted\n"
    assert run_command("edge-x", bug) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError: boom" in err and "edge-x: internal error (a bug)" in err


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


SNAPSHOT = {
    "devices": [
        {
            "device": "pi",
            "availability": "online",
            "model": "m.tflite",
            "runtime": "ai_edge_litert",
            "delegate": None,
            "last_label": "cat",
            "last_score": 0.9,
            "latency_p50_ms": 2.0,
            "latency_p99_ms": 3.0,
            "inferences_per_s": 1.0,
            "spool_depth": 0,
            "errors": 0,
            "last_seen_ago_s": 1.0,
        }
    ],
    "messages": 1,
    "malformed": 0,
    "recent_malformed": [],
}


def test_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(_Tty()) and not use_color(io.StringIO())
    colour = _Tty()
    LiveTable(colour).draw(SNAPSHOT)
    LiveTable(colour).draw(SNAPSHOT)
    assert "\x1b[32m" in colour.getvalue()  # online in green
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(_Tty()) and not use_color(_Tty(), tty=True)
    plain = _Tty()
    table = LiveTable(plain)
    table.draw(SNAPSHOT)
    table.draw(SNAPSHOT)
    text = plain.getvalue()
    assert not re.search(r"\x1b\[[0-9;]*m", text)  # no colour (SGR) escapes...
    assert "\x1b[" in text and "online" in text  # ...but the table still redraws in place


def test_help_formatting_keeps_shutil_out_for_the_agent() -> None:
    # argparse's own formatter imports shutil (with bz2 and lzma) for the terminal width; the agent
    # keeps them out of its memory, so the common formatter must too.
    code = (
        "import sys\n"
        "from edge import cli\n"
        "p = cli.parser('x')\n"
        "p.add_subparsers().add_parser('run').add_argument('--b', default=1, help='b')\n"
        "p.format_help(); p.parse_args(['run', '--b', '2'])\n"
        "print('shutil' in sys.modules)\n"
    )
    r = run_python("-c", code, timeout=60)
    assert r.returncode == 0 and r.stdout == "False\n", r.stdout + r.stderr


def test_a_misspelt_option_names_the_nearest_one_in_the_sub_command_it_was_given_to(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cases = [
        ("edge-fleet", ["rollout", "m.tflite", "--broker", "u", "--key", "k", "--devices", "d", "--canery", "1"]),
        ("edge-flash", ["push-model", "--broker", "u", "--key", "k", "--device-id", "d", "--shadow-fractoin=0.5", "m"]),
        ("edge-watch", ["--broker", "u", "--jsn"]),
        ("edge-agent", ["run", "--modle", "m.tflite"]),
    ]  # fmt: skip
    wanted = ["--canary", "--shadow-fraction", "--json", "--model"]
    usages = [
        "usage: edge-fleet rollout",
        "usage: edge-flash push-model",
        "usage: edge-watch",
        "usage: edge-agent run",
    ]
    for (script, argv), near, usage in zip(cases, wanted, usages):
        with pytest.raises(SystemExit) as exc:
            _main(script)(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and f"(did you mean {near}?)" in err, err
        assert err.startswith(usage), err
    with pytest.raises(SystemExit):
        _main("edge-fleet")(["ls", "--broker", "u", "--zzz", "--settel", "1"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --zzz --settel 1 (did you mean --settle?)" in err, err
