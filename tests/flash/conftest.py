"""Fixtures for edge-flash: bundles built once per session, the arm64 root cached across sessions."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.flash.bundle import BuiltBundle, build
from tests.flash.helpers import CACHE, MOBILENET, MOBILENET_TPU, RECIPE, clean_env, extract, recipe_key, sh


@pytest.fixture(scope="session")
def make_bundle(tmp_path_factory: pytest.TempPathFactory, coral: Path) -> Callable[..., BuiltBundle]:
    """Build (once per session per set of arguments) a bundle of the Coral mobilenet."""
    made: dict[tuple, BuiltBundle] = {}

    def make(
        arch: str = "aarch64",
        runtime: str = "ai-edge-litert",
        edgetpu: bool = False,
        device_id: str | None = None,
        broker: str | None = None,
    ) -> BuiltBundle:
        key = (arch, runtime, edgetpu, device_id, broker)
        if key not in made:
            out = tmp_path_factory.mktemp("bundle") / f"{arch}-{runtime}.tar.gz"
            model = coral / (MOBILENET_TPU if edgetpu else MOBILENET)
            made[key] = build(
                [model],
                out,
                arch=arch,
                runtime=runtime,
                labels=coral / "imagenet_labels.txt",
                device_id=device_id,
                broker=broker,
                log=lambda m: None,
            )
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


@pytest.fixture(scope="session")
def arm64_installed(
    arm64_base_root: Path, make_bundle: Callable[..., BuiltBundle], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], tuple[Path, BuiltBundle]]:
    """An arm64 root with an aarch64 bundle (Edge TPU mobilenet + CPU twin) installed, once per runtime.

    ai-edge-litert goes through the recipe end to end (build-rootfs.sh --bundle); tflite-runtime through
    install.sh --root on a copy of the cached root, which is what the recipe runs.
    """
    roots: dict[str, tuple[Path, BuiltBundle]] = {}

    def get(runtime: str) -> tuple[Path, BuiltBundle]:
        if runtime not in roots:
            built = make_bundle("aarch64", runtime, edgetpu=True)
            root = tmp_path_factory.mktemp(f"arm64-{runtime}") / "root"
            if runtime == "ai-edge-litert":
                proc = sh(
                    "bash",
                    RECIPE,
                    "--variant",
                    "extract",
                    "--bundle",
                    built.path,
                    root,
                    check=False,
                    env=clean_env(),
                )
            else:
                sh("cp", "-a", arm64_base_root, root)
                src = extract(built.path, tmp_path_factory.mktemp("src"))
                # --no-compile: byte-compiling numpy under qemu costs ~15 s and proves nothing more
                proc = sh(
                    "bash",
                    src / "install.sh",
                    "--root",
                    root,
                    "--no-start",
                    "--no-compile",
                    check=False,
                    env=clean_env(),
                )
            assert proc.returncode == 0, proc.stderr[-4000:]
            roots[runtime] = (root, built)
        return roots[runtime]

    return get
