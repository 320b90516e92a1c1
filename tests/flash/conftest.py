"""Fixtures for edge-flash: bundles built once per session, the arm64 root cached across sessions."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.flash.bundle import BuiltBundle, build
from tests.flash.helpers import CACHE, MOBILENET, MOBILENET_TPU, RECIPE, recipe_key, sh


@pytest.fixture(scope="session")
def make_bundle(tmp_path_factory: pytest.TempPathFactory, coral: Path) -> Callable[..., BuiltBundle]:
    """Build (once per session per set of arguments) a bundle of the Coral mobilenet."""
    made: dict[tuple, BuiltBundle] = {}

    def make(arch: str = "aarch64", runtime: str = "ai-edge-litert", edgetpu: bool = False,
             device_id: str | None = None, broker: str | None = None) -> BuiltBundle:
        key = (arch, runtime, edgetpu, device_id, broker)
        if key not in made:
            out = tmp_path_factory.mktemp("bundle") / f"{arch}-{runtime}.tar.gz"
            model = coral / (MOBILENET_TPU if edgetpu else MOBILENET)
            made[key] = build([model], out, arch=arch, runtime=runtime, labels=coral / "imagenet_labels.txt",
                              device_id=device_id, broker=broker, log=lambda m: None)
        return made[key]

    return make


@pytest.fixture(scope="session")
def arm64_base_root() -> Path:
    """The recipe's arm64 bookworm root (extract variant), built once and kept in .cache/ across sessions."""
    base = CACHE / f"arm64-root-{recipe_key()}"
    if not (base / ".edge-test-complete").exists():
        shutil.rmtree(base, ignore_errors=True)
        base.parent.mkdir(parents=True, exist_ok=True)
        proc = sh("bash", RECIPE, "--variant", "extract", base, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (base / ".edge-test-complete").touch()
    return base


@pytest.fixture
def arm64_root(arm64_base_root: Path, tmp_path: Path) -> Path:
    """A throw-away copy of the cached root for one test."""
    dest = tmp_path / "root"
    sh("cp", "-a", arm64_base_root, dest)
    return dest


