"""Helpers for the edge-flash tests (importable; fixtures live in conftest.py)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

from edge.flash import BUNDLE_DIR

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "flash"
RECIPE = ROOT / "device-images" / "build-rootfs.sh"
MOBILENET = "mobilenet_v1_0.25_128_quant.tflite"
MOBILENET_TPU = "mobilenet_v1_0.25_128_quant_edgetpu.tflite"


def sh(
    *cmd: str | Path, check: bool = True, timeout: float = 600, **kw: object
) -> subprocess.CompletedProcess[str]:
    kw.setdefault("text", True)
    return subprocess.run([str(c) for c in cmd], capture_output=True, check=check, timeout=timeout, **kw)  # type: ignore[call-overload]


def extract(bundle: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(bundle, "r:gz") as tar:
        tar.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(dest)
    return dest / BUNDLE_DIR


def rewrite(src: Path, out: Path, changes: dict[str, bytes | None]) -> Path:
    """Copy a bundle, replacing (bytes) or adding members, keeping its manifest: what a bad copy looks like."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(out, "w:gz", compresslevel=1) as tout:
        names = set()
        for member in tin:
            rel = member.name[len(BUNDLE_DIR) + 1 :]
            names.add(rel)
            data = tin.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if rel in changes:
                if changes[rel] is None:
                    continue
                data = changes[rel]
                member.size = len(data)  # type: ignore[arg-type]
            tout.addfile(member, io.BytesIO(data) if data is not None else None)
        for rel, data in changes.items():
            if rel not in names and data is not None:
                info = tarfile.TarInfo(f"{BUNDLE_DIR}/{rel}")
                info.size = len(data)
                tout.addfile(info, io.BytesIO(data))
    return out


def recipe_key() -> str:
    return hashlib.sha256(RECIPE.read_bytes()).hexdigest()[:12]


def clean_env() -> dict[str, str]:
    """No PYTHONPATH/PIP_* from the test run: the installed release must stand on its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
