"""The wheel really holds what the packages need: every module, every schema, the dashboard, the flash
templates; and every package-data glob in pyproject.toml matches a real file."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.support import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PACKAGES = ("edge", "converter")


def _source_files(package: str) -> set[str]:
    return {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    }


def _package_data() -> dict[str, list[str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(data["tool"]["setuptools"]["package-data"])


def test_every_package_data_glob_matches_a_file() -> None:
    for package, globs in _package_data().items():
        for pattern in globs:
            assert list((ROOT / package).glob(pattern)), (
                f"package-data {package}: {pattern!r} matches nothing"
            )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Build the wheel from a copy of the sources (a build leaves build/ and *.egg-info behind)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = tmp.glob("edge_ml_toolkit-*.whl")
    with zipfile.ZipFile(whl) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


def test_wheel_holds_every_module_and_data_file_and_nothing_else(wheel: set[str]) -> None:
    packaged = {n for n in wheel if n.split("/", 1)[0] in PACKAGES}
    expected = set().union(*map(_source_files, PACKAGES))
    assert packaged == expected, {
        "missing": sorted(expected - packaged),
        "extra": sorted(packaged - expected),
    }
    # the data files the code loads at run time, by name
    schemas = {p.name for p in (ROOT / "edge" / "contract" / "schemas").glob("*.json")}
    assert {"predictions.json", "status.json", "metrics.json"} <= schemas
    assert {f"edge/contract/schemas/{s}" for s in schemas} <= wheel
    assert "edge/watch/dashboard.html" in wheel
    assert {"edge/flash/templates/install.sh", "edge/flash/templates/edge-agent.service"} <= wheel
    assert "edge/py.typed" in wheel
